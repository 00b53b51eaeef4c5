#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace geometry {

struct Point {
    double x;
    double y;
};

class Polygon {
  public:
    explicit Polygon(std::vector<Point> points) : points_(std::move(points)) {
        if (points_.size() < 3) {
            throw std::invalid_argument("a polygon needs three points");
        }
    }

    double area() const {
        double sum = 0.0;
        for (std::size_t i = 0; i < points_.size(); ++i) {
            const Point& a = points_[i];
            const Point& b = points_[(i + 1) % points_.size()];
            sum += a.x * b.y - b.x * a.y;
        }
        return std::abs(sum) / 2.0;
    }

    bool contains(const Point& p) const {
        bool inside = false;
        for (std::size_t i = 0, j = points_.size() - 1; i < points_.size(); j = i++) {
            const Point& a = points_[i];
            const Point& b = points_[j];
            if ((a.y > p.y) != (b.y > p.y) &&
                p.x < (b.x - a.x) * (p.y - a.y) / (b.y - a.y) + a.x) {
                inside = !inside;
            }
        }
        return inside;
    }

    std::size_t size() const { return points_.size(); }

  private:
    std::vector<Point> points_;
};

int orientation(const Point& a, const Point& b, const Point& c) {
    double value = (b.y - a.y) * (c.x - b.x) - (b.x - a.x) * (c.y - b.y);
    if (value == 0.0) {
        return 0;
    }
    return value > 0.0 ? 1 : 2;
}

}  // namespace geometry
