#include <vector>

namespace geo {

class Shape {
public:
    virtual double area() const { return 0; }
    int sides;
};

double Shape_helper(int n) {
    return n * 1.5;
}

}  // namespace geo

template <typename T>
T maximum(T a, T b) {
    return a > b ? a : b;
}

double geo::Circle::area() const {
    return 3.14;
}
