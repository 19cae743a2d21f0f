import math


def area_of_circle(radius):
    return math.pi * 


def circumference(radius):
    
