package geometry

import "math"

const Pi = 3.14

type Circle struct {
	Radius float64
}

func (c *Circle) Area() float64 {
	return Pi * c.Radius * c.Radius
}

func NewCircle(r float64) *Circle {
	return &Circle{Radius: r}
}

func broken( {
	return
}
