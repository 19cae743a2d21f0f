import { readFile } from "fs";

interface Point {
  x: number;
  y: number;
}

export class Vector implements Point {
  x = 0;
  y = 0;
  length(): number {
    return Math.hypot(this.x, this.y);
  }
}

export const scale = (v: Vector, k: number): Vector => {
  return v;
};

function norm<T>(items: T[]): number {
  return items.length;
}
