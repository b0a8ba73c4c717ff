"""Test helper shared by the COCO tests: an uncompressed RLE written out by hand, independent of pycocotools."""
import numpy as np


def uncompressed_rle(mask: np.ndarray) -> dict:
    """Run lengths over the column-major pixels, starting with a run of zeros (COCO's layout)."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}
