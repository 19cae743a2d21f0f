package demo;

import java.util.List;

public class Sample {
    private int count;

    public Sample(int count) {
        this.count = count;
    }

    public int twice() {
        return count * 2;
    }

    interface Listener {
        void onEvent(String name);
    }

    enum Color { RED, GREEN }
}
