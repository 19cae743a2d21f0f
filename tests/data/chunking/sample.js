import fs from "fs";
const LIMIT = 10;

function add(a, b) {
  return a + b;
}

class Counter extends Base {
  constructor() {
    super();
    this.n = 0;
  }
  increment(by) {
    this.n += by;
  }
}

const double = (x) => x * 2;

export function exported(name) {
  return `hi ${name}`;
}

module.exports = { add };
