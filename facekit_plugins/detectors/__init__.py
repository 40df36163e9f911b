"""Built-in face detectors: photos to faces with five landmarks (facekit.data.detect).

Each factory's keyword arguments are the detector's options (``--detector-opt``);
the detectors themselves are in their own modules, imported when one is built.
"""

from facekit import hookimpl
from facekit.declare import between, fraction


def mtcnn_detector(threshold_pnet=0.6, threshold_rnet=0.7, threshold_onet=0.8,
                   scale_factor=0.709, device="CPU:0"):
    """MTCNN (Zhang et al. 2016), the mtcnn package's weights: boxes, scores, 5 landmarks."""
    from facekit_plugins.detectors.mtcnn import MTCNNDetector

    return MTCNNDetector(thresholds=(threshold_pnet, threshold_rnet, threshold_onet),
                         scale_factor=scale_factor, device=device)


@hookimpl
def facekit_register_detectors(register):
    unit = fraction(high_open=False)
    register("mtcnn", mtcnn_detector,
             checks={"threshold_pnet": unit, "threshold_rnet": unit, "threshold_onet": unit,
                     "scale_factor": between(0.3, 0.95)})
