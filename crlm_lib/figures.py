"""Former home of the data-side figures, now in :mod:`crlm_lib.plots` (the one plotting module).

Kept as re-exports because notebooks 01, 02 and 04 call ``figures.plot_masks_overlay``,
``figures.plot_learning_curves``, ``figures.read_histories`` and
``figures.plot_modality_agreement``; new code imports :mod:`crlm_lib.plots`.
"""

from crlm_lib.plots import (
    MASK_STYLE,
    most_tumour_slice,
    plot_learning_curves,
    plot_masks_overlay,
    plot_modality_agreement,
    read_histories,
)

__all__ = [
    "MASK_STYLE",
    "most_tumour_slice",
    "plot_learning_curves",
    "plot_masks_overlay",
    "plot_modality_agreement",
    "read_histories",
]
