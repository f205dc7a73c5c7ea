"""Hand-designed features and filters: what a person built before CNNs learned their own.

HOG descriptors come from scikit-image; Sobel and Gabor kernels are the classic
edge and texture detectors (introduced in notebook 01).
"""

from __future__ import annotations

import numpy as np


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


def sobel_kernels() -> np.ndarray:
    """The two 3x3 Sobel kernels (horizontal and vertical gradient), ``[2, 3, 3]``."""
    gx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    return np.stack([gx, gx.T])


def gabor_kernels(size: int = 5, orientations: int = 4, frequency: float = 0.25) -> np.ndarray:
    """Real parts of Gabor kernels at evenly spaced orientations, ``[orientations, size, size]``."""
    from skimage.filters import gabor_kernel

    if size < 3 or size % 2 == 0:
        raise ValueError(f"size={size}: expected an odd kernel size >= 3")
    if orientations < 1:
        raise ValueError(f"orientations={orientations}: expected at least 1")
    half = size // 2
    kernels = []
    for theta in np.arange(orientations) * np.pi / orientations:
        # sigma = size / 4 makes scikit-image's kernel (3 sigma each side) larger than
        # size, so the centre crop keeps the envelope's bulk.
        kernel = np.real(gabor_kernel(frequency, theta=theta, sigma_x=size / 4, sigma_y=size / 4))
        centre_y, centre_x = kernel.shape[0] // 2, kernel.shape[1] // 2
        kernels.append(
            kernel[centre_y - half : centre_y + half + 1, centre_x - half : centre_x + half + 1]
        )
    return np.stack(kernels).astype(np.float32)


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
