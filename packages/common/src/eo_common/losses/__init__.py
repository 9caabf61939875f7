"""Loss functions shared by the eolab packages.

Every loss is an ``nn.Module`` with a functional twin (kornia style); docstrings give the formula,
the shapes and a worked example whose output is checked by the tests (doctest).

==========================  =========================================================  ==============
Module                      What                                                        Functional
==========================  =========================================================  ==============
:class:`L1Loss`             L1 with optional per-pixel weight map                      :func:`l1_loss`
:class:`VGGPerceptualLoss`  L1 between frozen VGG16 features, any band count            :func:`perceptual_loss`
:class:`GramTextureLoss`    Gram-matrix texture loss (VGG features or raw bands)        :func:`gram_texture_loss`
:class:`FFTLoss`            L1 on real/imag parts of ``rfft2``                          :func:`fft_loss`
:class:`GradientLoss`       L1 between Sobel edge maps                                  :func:`gradient_loss`
:class:`ContrastiveLoss`    NT-Xent / InfoNCE between paired embeddings                 :func:`contrastive_loss`
:class:`FocalLoss`          softmax focal, per-class alpha and gamma, ignore_index      :func:`focal_loss`
:class:`DiceLoss`           multiclass soft Dice (smp underneath), ignore_index         :func:`dice_loss`
:class:`MCCLoss`            1 - soft multiclass MCC (Gorodkin), ignore_index            :func:`mcc_loss`
:class:`BoundaryLoss`       Kervadec surface loss with :func:`signed_distance_map`      :func:`boundary_loss`
:class:`CoralLoss`          CORAL ordinal loss (+ :class:`CoralLayer` head)             :func:`coral_loss`
:class:`WeightedSum`        named terms x weights -> (total, parts)
:class:`LovaszLoss`         re-exported from segmentation_models_pytorch
:class:`TverskyLoss`        re-exported from segmentation_models_pytorch
==========================  =========================================================  ==============
"""

from segmentation_models_pytorch.losses import LovaszLoss, TverskyLoss

from .combine import WeightedSum
from .contrastive import ContrastiveLoss, contrastive_loss
from .ordinal import (
    CoralLayer,
    CoralLoss,
    coral_class_probabilities,
    coral_loss,
    label_to_levels,
    levels_to_label,
)
from .perceptual import (
    VGG16_LAYERS,
    GramTextureLoss,
    VGG16Features,
    VGGPerceptualLoss,
    gram_matrix,
    gram_texture_loss,
    load_vgg16_features_state_dict,
    perceptual_loss,
)
from .pixel import (
    FFTLoss,
    GradientLoss,
    L1Loss,
    fft_loss,
    gradient_loss,
    image_gradients,
    l1_loss,
)
from .segmentation import (
    BoundaryLoss,
    DiceLoss,
    FocalLoss,
    MCCLoss,
    boundary_loss,
    dice_loss,
    focal_loss,
    mcc_loss,
    signed_distance_map,
    soft_mcc,
)

__all__ = [
    # pixel
    "L1Loss",
    "l1_loss",
    "FFTLoss",
    "fft_loss",
    "GradientLoss",
    "gradient_loss",
    "image_gradients",
    # feature space
    "VGG16_LAYERS",
    "VGG16Features",
    "VGGPerceptualLoss",
    "perceptual_loss",
    "GramTextureLoss",
    "gram_matrix",
    "gram_texture_loss",
    "load_vgg16_features_state_dict",
    # contrastive
    "ContrastiveLoss",
    "contrastive_loss",
    # segmentation
    "FocalLoss",
    "focal_loss",
    "DiceLoss",
    "dice_loss",
    "MCCLoss",
    "mcc_loss",
    "soft_mcc",
    "BoundaryLoss",
    "boundary_loss",
    "signed_distance_map",
    "LovaszLoss",
    "TverskyLoss",
    # ordinal
    "CoralLayer",
    "CoralLoss",
    "coral_loss",
    "coral_class_probabilities",
    "label_to_levels",
    "levels_to_label",
    # combination
    "WeightedSum",
]
