"""Hand-designed features and filters: what a person built before CNNs learned their own.

HOG descriptors come from scikit-image; Sobel and Gabor kernels are the classic
edge and texture detectors (introduced in notebook 01).
"""

from __future__ import annotations

import numpy as np

from utils.checks import check_choice, fail


def hog_features(
    images: np.ndarray,
    *,
    orientations: int = 9,
    pixels_per_cell: tuple[int, int] = (8, 8),
    cells_per_block: tuple[int, int] = (2, 2),
) -> np.ndarray:
    """HOG descriptor of each grayscale image ``[N, H, W]`` -> float32 ``[N, D]`` (scikit-image)."""
    from skimage.feature import hog

    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(
            f"images has shape {images.shape}: expected a non-empty grayscale batch [N, H, W]"
        )
    return np.stack(
        [
            hog(
                image,
                orientations=orientations,
                pixels_per_cell=pixels_per_cell,
                cells_per_block=cells_per_block,
                feature_vector=True,
            )
            for image in images
        ]
    ).astype(np.float32)


def sobel_kernels(size: int = 3) -> np.ndarray:
    """The two Sobel kernels (horizontal and vertical gradient), ``[2, size, size]``.

    ``size=3`` is the textbook kernel; 5 and 7 are OpenCV's larger Sobel kernels
    (``cv2.getDerivKernels``: a smoothed derivative).
    """
    if size not in (3, 5, 7):
        fail("size", size, "3, 5 or 7")
    if size == 3:
        gx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    else:
        import cv2

        derivative, smooth = cv2.getDerivKernels(1, 0, size)
        gx = np.outer(smooth.ravel(), derivative.ravel()).astype(np.float32)
    return np.stack([gx, gx.T])


def gabor_kernels(
    size: int = 5, orientations: int = 4, frequency: float = 0.25, phase: str = "even"
) -> np.ndarray:
    """Gabor kernels at evenly spaced orientations, ``[orientations, size, size]``.

    ``phase="even"``: the real (cosine) part, a stripe detector; ``"odd"``: the imaginary
    (sine) part, an oriented edge detector. Orientation 0 has stripes along the image's
    columns (scikit-image's ``gabor_kernel`` convention). At ``size=3`` and frequency
    0.25 the cosine is 0 at the border, so the kernel has no negative lobe: use 5 or more
    for a real stripe detector.
    """
    from skimage.filters import gabor_kernel

    if size < 3 or size % 2 == 0:
        raise ValueError(f"size={size}: expected an odd kernel size >= 3")
    if orientations < 1:
        raise ValueError(f"orientations={orientations}: expected at least 1")
    check_choice("phase", phase, ("even", "odd"))
    part = np.real if phase == "even" else np.imag
    half = size // 2
    kernels = []
    for theta in np.arange(orientations) * np.pi / orientations:
        # sigma = size / 4 makes scikit-image's kernel (3 sigma each side) larger than
        # size, so the centre crop keeps the envelope's bulk.
        kernel = part(gabor_kernel(frequency, theta=theta, sigma_x=size / 4, sigma_y=size / 4))
        centre_y, centre_x = kernel.shape[0] // 2, kernel.shape[1] // 2
        kernels.append(
            kernel[centre_y - half : centre_y + half + 1, centre_x - half : centre_x + half + 1]
        )
    return np.stack(kernels).astype(np.float32)


def designed_filter_bank(size: int = 5) -> tuple[np.ndarray, list[str]]:
    """Sixteen hand-designed filters ``[16, size, size]`` and their names, for a frozen conv1.

    Sobel x and y and Gabor edges (odd phase) at 0/45/90/135 degrees, each in both signs,
    because a ReLU after the filter keeps only one (dark-to-bright and bright-to-dark are
    different edges); Gabor stripes (even phase) at the four orientations, bright stripes
    only (the digits are bright strokes). Each kernel has zero mean (no response to flat
    regions) and unit L2 norm, so no filter dominates by scale. Introduced in notebook 01.
    """
    sobel = sobel_kernels(size)
    odd = gabor_kernels(size, phase="odd")
    even = gabor_kernels(size, phase="even")
    angles = [f"{a}°" for a in (0, 45, 90, 135)]
    kernels = np.concatenate([sobel, -sobel, odd, -odd, even])
    names = (
        ["Sobel x", "Sobel y", "-Sobel x", "-Sobel y"]
        + [f"edge {a}" for a in angles]
        + [f"-edge {a}" for a in angles]
        + [f"stripe {a}" for a in angles]
    )
    kernels = kernels - kernels.mean(axis=(1, 2), keepdims=True)
    kernels /= np.linalg.norm(kernels, axis=(1, 2), keepdims=True)
    return kernels.astype(np.float32), names


def conv_weights(kernels: np.ndarray) -> np.ndarray:
    """Kernels ``[K, k, k]`` as a one-channel Conv2D kernel ``[k, k, 1, K]`` (Keras' layout)."""
    kernels = np.asarray(kernels, np.float32)
    if kernels.ndim != 3 or kernels.shape[1] != kernels.shape[2]:
        fail("kernels", f"array of shape {kernels.shape}", "square kernels [K, k, k]")
    return np.moveaxis(kernels, 0, -1)[:, :, None, :]


def filter_responses(image: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Correlate one grayscale image ``[H, W]`` with kernels ``[K, k, k]`` -> ``[H, W, K]``.

    Same-size output with reflected borders, as a 'same'-padded convolution layer would
    produce (Keras' Conv2D computes cross-correlation too).
    """
    import cv2

    image = np.asarray(image, np.float32)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2:
        raise ValueError(f"image has shape {image.shape}: expected one grayscale image [H, W]")
    return np.stack([cv2.filter2D(image, -1, k) for k in np.asarray(kernels, np.float32)], axis=-1)
