"""Hardware side of codesign: target descriptions, performance models, RTL generators.

``hw`` imports neither ``compiler`` nor ``codesign``; everything above it may import it.
"""

from hw.errors import InputError

__all__ = ["InputError"]
