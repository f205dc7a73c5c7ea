"""The course's shared code: one short module per concept, found by its name.

Plumbing (``course``, ``checks``, ``cache``, ``training``, ``profiling``, ``plotting``,
``progress``, ``uncertainty``, ``offline``, ``colab``, ``runner``); data (``shapes``,
``backgrounds``, ``digits``, ``handcrafted``, ``augmentation``, ``image_folder``,
``detection_data``); features and backbones (``receptive_field``, ``resnet``,
``backbone``, ``transfer``, ``localization``); detection primitives (``boxes``,
``anchors``, ``layers`` with its kernel ``_roi_kernels``, ``losses``, ``matching``,
``metrics``, ``proposals``); detection pieces (``rpn``, ``roi_heads``,
``detector_model``); detectors, siblings that never import each other (``rcnn``,
``fast_rcnn``, ``faster_rcnn``, ``one_stage``). The README lists what each
holds.

Import the module you need (``from utils import boxes``); this package imports nothing
heavy on its own, so ``python -m utils.runner`` starts fast.
"""

__version__ = "0.2.0"
