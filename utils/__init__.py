"""The course's shared code: one short module per concept, found by its name.

Plumbing (``course``, ``checks``, ``cache``, ``training``, ``profiling``, ``plotting``,
``offline``, ``runner``); data (``shapes``, ``backgrounds``, ``digits``, ``handcrafted``,
``augmentation``, ``image_folder``, ``detection_data``); features and backbones
(``receptive_field``, ``resnet``, ``backbone``, ``localization``); detection primitives
(``boxes``, ``anchors``, ``layers``, ``losses``, ``matching``, ``metrics``,
``proposals``); detection pieces (``rpn``, ``roi_heads``); detectors, siblings that never
import each other (``rcnn``, ``fast_rcnn``, ``faster_rcnn``). The README lists what each
holds.

Import the module you need (``from utils import boxes``); this package imports nothing
heavy on its own, so ``python -m utils.runner`` starts fast.
"""

__version__ = "0.2.0"
