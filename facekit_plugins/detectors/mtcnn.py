"""MTCNN through the ``mtcnn`` package (MIT; its P-, R- and O-Net weights ship in the wheel).

Two things about mtcnn 1.0 shape how it is called here:

- its stages load their weights with joblib (a pickle) from the path they are
  given, and a bare name is looked up in the current folder first: the weights
  are named by their full path inside the installed package, so a file in the
  user's folder is never unpickled;
- a batch whose pyramid breaks raises inside the package, which reports "no face"
  for every image of the batch; images a batch found no face in are detected
  again one by one, and the pyramid is always built from its default 20-pixel
  faces (other ``min_face_size`` values break small images the same way), with
  facekit.data.detect dropping small faces afterwards.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from facekit.data.detect import Face

# The columns of mtcnn's numpy output: image, x1, y1, x2, y2, score, then the x of
# the five points (left eye, right eye, nose, left and right mouth corner), then their y.
_IMAGE, _BOX, _SCORE, _XS, _YS = 0, slice(1, 5), 5, slice(6, 11), slice(11, 16)


class MTCNNDetector:
    """Faces with five landmarks in RGB uint8 images (facekit.data.detect.Detector)."""

    def __init__(self, thresholds=(0.6, 0.7, 0.8), scale_factor=0.709, device="CPU:0"):
        import importlib.resources

        from mtcnn import MTCNN
        from mtcnn.stages import StageONet, StagePNet, StageRNet

        weights = importlib.resources.files("mtcnn.assets.weights")
        self.mtcnn = MTCNN(stages=[StagePNet(weights=str(weights / "pnet.lz4")),
                                   StageRNet(weights=str(weights / "rnet.lz4")),
                                   StageONet(weights=str(weights / "onet.lz4"))],
                           device=device)
        self.settings = dict(threshold_pnet=thresholds[0], threshold_rnet=thresholds[1],
                             threshold_onet=thresholds[2], scale_factor=scale_factor)

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        found: list[list[Face]] = [[] for _ in images]
        by_shape = defaultdict(list)  # a batch is padded to its largest image: group sizes
        for position, image in enumerate(images):
            by_shape[image.shape].append(position)
        for positions in by_shape.values():
            batch = self._detect([images[p] for p in positions])
            for position, faces in zip(positions, batch):
                found[position] = faces
            if len(positions) > 1:
                for position in positions:
                    if not found[position]:
                        found[position] = self._detect([images[position]])[0]
        return found

    def _detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        rows = self.mtcnn.detect_faces(images if len(images) > 1 else images[0],
                                       output_type="numpy", box_format="xyxy",
                                       **self.settings)
        faces: list[list[Face]] = [[] for _ in images]
        for row in np.asarray(rows, np.float64).reshape(-1, 16):
            points = np.stack([row[_XS], row[_YS]], axis=1)
            faces[int(row[_IMAGE])].append(Face(row[_BOX].copy(), float(row[_SCORE]), points))
        return faces
