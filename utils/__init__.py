"""The course's shared code: one short module per concept.

Import the module you need (``from utils import boxes``); this package imports
nothing heavy on its own, so ``python -m utils.runner`` starts fast.
"""

__version__ = "0.1.0"
