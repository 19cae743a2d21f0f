use std::fmt;

const MAX: usize = 4;

pub struct Stack<T> {
    items: Vec<T>,
}

impl<T> Stack<T> {
    pub fn push(&mut self, item: T) {
        self.items.push(item);
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

trait Shape {
    fn area(&self) -> f64;
}

mod inner {
    pub fn helper() -> u8 {
        1
    }
}

fn main() {
    let s: Stack<u8> = Stack { items: vec![] };
}
