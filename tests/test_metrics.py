"""VOC mean average precision against the spec's toy vector, a devkit-style loop and COCO."""

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from utils import boxes
from utils.metrics import average_precision, mean_average_precision, precision_envelope


def toy_scene():
    """The spec's toy vector (xywh boxes), one class."""
    ground_truths = [
        (boxes.xywh_to_xyxy(np.array([[10, 10, 50, 50], [100, 100, 40, 40]], np.float32)), [1, 1]),
        (boxes.xywh_to_xyxy(np.array([[20, 20, 60, 60]], np.float32)), [1]),
    ]
    detections = [
        (
            boxes.xywh_to_xyxy(
                np.array([[12, 12, 50, 50], [200, 200, 30, 30], [100, 102, 40, 38]], np.float32)
            ),
            [1, 1, 1],
            [0.9, 0.8, 0.6],
        ),
        (
            boxes.xywh_to_xyxy(np.array([[22, 18, 58, 62], [0, 0, 20, 20]], np.float32)),
            [1, 1],
            [0.7, 0.5],
        ),
    ]
    return ground_truths, detections


def random_scene(rng, images=6, classes=3):
    """Ground truth in separate grid cells; detections jittered, duplicated or spurious."""
    ground_truths, detections = [], []
    for _ in range(images):
        cells = rng.choice(16, size=rng.integers(0, 7), replace=False)
        corner = np.stack([cells % 4, cells // 4], 1) * 100.0 + rng.uniform(0, 20, (len(cells), 2))
        size = rng.uniform(20, 70, (len(cells), 2))
        gt_boxes = np.concatenate([corner, corner + size], 1).astype(np.float32)
        gt_labels = rng.integers(1, classes + 1, len(cells))
        ground_truths.append((gt_boxes, gt_labels))
        copies = rng.integers(0, len(cells), rng.integers(0, 9)) if len(cells) else np.zeros(0, int)
        jitter = rng.normal(0, rng.choice([2.0, 12.0]), (len(copies), 4))
        spurious = rng.uniform(0, 400, (rng.integers(0, 4), 2))
        spurious = np.concatenate([spurious, spurious + rng.uniform(10, 60, spurious.shape)], 1)
        det_boxes = np.concatenate([gt_boxes[copies] + jitter, spurious]).astype(np.float32)
        det_labels = np.concatenate(
            [
                np.where(rng.uniform(size=len(copies)) < 0.85, gt_labels[copies], 1),
                rng.integers(1, classes + 1, len(spurious)),
            ]
        )
        detections.append((det_boxes, det_labels, rng.uniform(size=len(det_boxes))))
    return ground_truths, detections


def reference_map(ground_truths, detections, iou_threshold, method):
    """The VOC devkit's voc_eval loop, one detection at a time."""
    classes = sorted({int(label) for _, labels in ground_truths for label in labels})
    average_precisions = {}
    for label in classes:
        entries = [
            (score, image, box)
            for image, (det_boxes, labels, scores) in enumerate(detections)
            for box, det_label, score in zip(det_boxes, labels, scores, strict=True)
            if det_label == label
        ]
        entries.sort(key=lambda entry: -entry[0])
        matched = {
            image: [False] * int(np.sum(np.asarray(labels) == label))
            for image, (_, labels) in enumerate(ground_truths)
        }
        count = sum(len(flags) for flags in matched.values())
        true_positives = []
        for _, image, box in entries:
            gt_boxes, labels = ground_truths[image]
            candidates = gt_boxes[np.asarray(labels) == label]
            best_iou, best = 0.0, -1
            for index, gt in enumerate(candidates):
                w = max(min(box[2], gt[2]) - max(box[0], gt[0]), 0)
                h = max(min(box[3], gt[3]) - max(box[1], gt[1]), 0)
                union = (box[2] - box[0]) * (box[3] - box[1]) + (gt[2] - gt[0]) * (gt[3] - gt[1])
                overlap = w * h / (union - w * h)
                if overlap > best_iou:
                    best_iou, best = overlap, index
            hit = best_iou >= iou_threshold and not matched[image][best]
            if hit:
                matched[image][best] = True
            true_positives.append(hit)
        hits = np.cumsum(true_positives)
        recall = hits / count
        precision = hits / np.arange(1, len(hits) + 1)
        if method == "11-point":
            ap = 0.0
            for threshold in np.arange(0, 1.1, 0.1):
                ap += (
                    precision[recall >= threshold].max() if np.any(recall >= threshold) else 0
                ) / 11
        else:
            ap = 0.0
            previous_recall = 0.0
            for k in range(len(recall)):
                if recall[k] > previous_recall:
                    ap += (recall[k] - previous_recall) * precision[k:].max()
                    previous_recall = recall[k]
        average_precisions[label] = ap
    return average_precisions


def pycocotools_ap(ground_truths, detections):
    """COCO's ``(AP@[.5:.95], AP50)`` for the same boxes."""
    images, annotations, results = [], [], []
    for image, (gt_boxes, labels) in enumerate(ground_truths):
        images.append({"id": image, "width": 1000, "height": 1000})
        for box, label in zip(boxes.xyxy_to_xywh(gt_boxes), labels, strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image,
                    "category_id": int(label),
                    "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
        det_boxes, det_labels, scores = detections[image]
        for box, label, score in zip(
            boxes.xyxy_to_xywh(det_boxes), det_labels, scores, strict=True
        ):
            results.append(
                {
                    "image_id": image,
                    "category_id": int(label),
                    "bbox": [float(v) for v in box],
                    "score": float(score),
                }
            )
    categories = sorted(
        {a["category_id"] for a in annotations} | {r["category_id"] for r in results}
    )
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c} for c in categories],
        }
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[0], evaluator.stats[1]


def test_toy_vector_from_the_spec():
    ground_truths, detections = toy_scene()
    result = mean_average_precision(ground_truths, detections)
    assert result["mAP"] == pytest.approx(0.8333, abs=1e-4)
    assert result["AP"] == {1: pytest.approx(5 / 6)}
    np.testing.assert_allclose(result["recall"][1], [1 / 3, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(result["precision"][1], [1, 1 / 2, 2 / 3, 3 / 4, 3 / 5])
    np.testing.assert_allclose(result["scores"][1], [0.9, 0.8, 0.7, 0.6, 0.5])
    assert result["num_ground_truth"] == {1: 3}
    eleven = mean_average_precision(ground_truths, detections, method="11-point")
    assert eleven["mAP"] == pytest.approx(0.8409, abs=1e-4)
    coco_map, coco_ap50 = pycocotools_ap(ground_truths, detections)
    assert coco_ap50 == pytest.approx(0.8342, abs=1e-4)
    assert coco_map == pytest.approx(0.7089, abs=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_random_scenes_match_devkit_loop_and_pycocotools(seed):
    rng = np.random.default_rng(seed)
    ground_truths, detections = random_scene(rng)
    for method in ("all-point", "11-point"):
        for threshold in (0.5, 0.7):
            result = mean_average_precision(ground_truths, detections, threshold, method)
            expected = reference_map(ground_truths, detections, threshold, method)
            assert result["AP"] == pytest.approx(expected, abs=1e-9)
            assert result["mAP"] == pytest.approx(np.mean(list(expected.values())), abs=1e-9)
    # COCO samples the curve at 101 recalls, so AP50 agrees to about 1/101 per side.
    _, coco_ap50 = pycocotools_ap(ground_truths, detections)
    assert mean_average_precision(ground_truths, detections)["mAP"] == pytest.approx(
        coco_ap50, abs=0.02
    )


def test_classes_without_detections_score_zero_and_detection_only_classes_are_ignored():
    gt = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), [1, 2])]
    det = [(np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32), [1, 7], [0.9, 0.8])]
    result = mean_average_precision(gt, det)
    assert result["AP"] == {1: 1.0, 2: 0.0}
    assert result["mAP"] == 0.5
    with_empty_image = mean_average_precision([*gt, (np.zeros((0, 4)), [])], [*det, det[0]])
    assert list(with_empty_image["AP"]) == [1, 2]
    assert all(type(label) is int for label in with_empty_image["AP"])
    empty = mean_average_precision([(np.zeros((0, 4)), [])], [(np.zeros((0, 4)), [], [])])
    assert np.isnan(empty["mAP"]) and empty["AP"] == {}


def test_duplicates_are_false_positives_and_threshold_is_inclusive():
    gt = [(np.array([[0, 0, 4, 1]], np.float32), [3])]
    # IoU exactly 0.5 with the ground truth, then a duplicate of it.
    det = [(np.array([[0, 0, 2, 1], [0, 0, 2, 1]], np.float32), [3, 3], [0.9, 0.8])]
    result = mean_average_precision(gt, det)
    np.testing.assert_allclose(result["precision"][3], [1, 0.5])
    assert result["AP"][3] == 1.0


def test_average_precision_and_envelope():
    recall, precision = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(precision_envelope(precision), [1, 2 / 3, 2 / 3])
    assert average_precision(recall, precision) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision([], []) == 0.0
    assert average_precision([], [], "11-point") == 0.0


def test_bad_inputs_are_rejected():
    gt = [(np.zeros((1, 4)), [1])]
    det = [(np.zeros((1, 4)), [1], [0.5])]
    with pytest.raises(
        ValueError, match=r"ground_truths has 1 entries and detections 2: expected one per image"
    ):
        mean_average_precision(gt, det * 2)
    with pytest.raises(ValueError, match=r"method='voc': expected one of"):
        mean_average_precision(gt, det, method="voc")
    with pytest.raises(ValueError, match=r"iou_threshold=1.5: expected a number in \(0, 1\]"):
        mean_average_precision(gt, det, iou_threshold=1.5)
    with pytest.raises(
        ValueError,
        match=r"detections\[0\] has lengths .*: expected one labels/scores entry per box",
    ):
        mean_average_precision(gt, [(np.zeros((2, 4)), [1, 1], [0.5])])
    with pytest.raises(
        ValueError, match=r"ground_truths\[0\] boxes have shape \(1, 5\): expected \[N, 4\]"
    ):
        mean_average_precision([(np.zeros((1, 5)), [1])], det)
    with pytest.raises(
        ValueError, match=r"ground_truths\[0\]=.*: expected a tuple \(boxes, labels\)"
    ):
        mean_average_precision([np.zeros((1, 4))], det)
    with pytest.raises(ValueError, match=r"recall has shape \(2,\) and precision \(3,\)"):
        average_precision([0.1, 0.2], [1, 1, 1])
