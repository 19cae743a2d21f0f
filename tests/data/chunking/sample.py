"""A module docstring."""
import os
from typing import List

LIMIT = 10


@dataclass
class Shape:
    """A shape."""

    sides: int = 0

    def area(self) -> float:
        return 0.0

    class Inner:
        def deep(self):
            def helper():
                return 1
            return helper()


def top_level(a, b):
    return a + b


async def fetch(url):
    return await get(url)

if __name__ == "__main__":
    print(top_level(1, 2)
