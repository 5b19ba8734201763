# -*- coding: utf-8 -*-
"""
Images of another resolution than the model's: the one place where nucleus types set the
test-time scale of an image of ``image_mpp`` um/px.

The model works at ``MODEL.PIXEL_SIZE_UM`` (0 = the training data's 0.25 um/px) and its recipe
predicts at ``INPUT.TEST_SCALE`` times that resolution; an image of ``image_mpp`` is therefore
resized by ``INPUT.TEST_SCALE x image_mpp / model mpp`` (a 20x CRCHisto image at 0.55 um/px with
the CPU recipe: 1.25 x 2.2 = 2.75), and the predictor returns its results in the image's own
pixels. When the predictor takes the image's mpp itself, :func:`inference_cfg` becomes that call.
"""
__all__ = ["inference_cfg", "model_mpp", "test_scale"]


def model_mpp(cfg) -> float:
    """The model's resolution in um/px (``MODEL.PIXEL_SIZE_UM``, 0 = 0.25)."""
    from ..slide.config import model_mpp as _model_mpp

    return _model_mpp(cfg)


def test_scale(cfg, image_mpp: float) -> float:
    """The factor an image of ``image_mpp`` um/px is resized by before the model."""
    if not (image_mpp and image_mpp > 0):
        raise ValueError(f"the images' resolution must be a positive number of um/px, got {image_mpp}")
    return float(cfg.INPUT.TEST_SCALE) * float(image_mpp) / model_mpp(cfg)


def inference_cfg(cfg, image_mpp: float):
    """A copy of ``cfg`` (not frozen) that predicts images of ``image_mpp`` at the model's resolution."""
    out = cfg.clone()
    out.defrost()
    out.INPUT.TEST_SCALE = test_scale(cfg, image_mpp)
    return out
