#include <stdio.h>

#define MAX 10

struct point {
    int x;
    int y;
};

static int add(int a, int b) {
    return a + b;
}

char *name_of(struct point *p) {
    return "point";
}

int main(void) {
    printf("%d\n", add(1, 2));
    return 0;
}
