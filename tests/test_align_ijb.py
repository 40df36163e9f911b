"""5-point alignment (a known transform recovered, landmarks landing on the template),
facekit prepare --landmarks, and IJB 1:1 on a miniature protocol with known answers."""

import json

import numpy as np
import pytest
from PIL import Image

from facekit.data.align import ARCFACE_TEMPLATE, align_face, similarity_transform
from facekit.errors import FacekitError
from tests.conftest import invoke_facekit, run_facekit


def _similarity(scale, degrees, shift):
    angle = np.radians(degrees)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.hstack([rotation, np.reshape(shift, (2, 1))])


def _apply(matrix, points):
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize("scale, degrees, shift", [(1.0, 0.0, (0, 0)), (1.7, 23.0, (12, -5)),
                                                   (0.4, -140.0, (-30, 77))])
def test_a_known_similarity_transform_is_recovered(scale, degrees, shift):
    truth = _similarity(scale, degrees, shift)
    source = np.random.default_rng(0).uniform(0, 250, (5, 2))
    np.testing.assert_allclose(similarity_transform(source, _apply(truth, source)), truth,
                               atol=1e-9)


def test_the_fit_is_least_squares_and_never_a_reflection():
    rng = np.random.default_rng(1)
    source = rng.uniform(0, 100, (5, 2))
    target = _apply(_similarity(1.3, 40, (5, 9)), source) + rng.normal(0, 2, (5, 2))
    found = similarity_transform(source, target)
    assert np.linalg.det(found[:, :2]) > 0
    error = np.sum((_apply(found, source) - target) ** 2)
    for _ in range(200):  # no nearby similarity fits better
        nudged = _similarity(np.hypot(*found[:, 0]) * (1 + rng.normal(0, 0.01)),
                             np.degrees(np.arctan2(found[1, 0], found[0, 0])) + rng.normal(0, 1),
                             found[:, 2] + rng.normal(0, 0.5, 2))
        assert np.sum((_apply(nudged, source) - target) ** 2) >= error - 1e-9
    mirrored = source * [-1, 1]  # mirrored points: the best rotation, not a reflection
    assert np.linalg.det(similarity_transform(source, mirrored)[:, :2]) > 0


def _face_with_dots(landmarks, size=(220, 180)):
    image = np.zeros((size[1], size[0], 3), np.uint8)
    for x, y in np.round(landmarks).astype(int):
        image[y - 2:y + 3, x - 2:x + 3] = 255
    return Image.fromarray(image)


def test_aligned_landmarks_land_on_the_template():
    landmarks = _apply(_similarity(1.4, -17, (40, 10)), ARCFACE_TEMPLATE)
    aligned = np.asarray(align_face(_face_with_dots(landmarks), landmarks, 112))[..., 0]
    weights = aligned.astype(np.float64)
    for x, y in ARCFACE_TEMPLATE:  # the bright dot's centre near each template point
        left, top = int(x) - 6, int(y) - 6
        window = weights[top:top + 13, left:left + 13]
        rows, cols = np.mgrid[top:top + 13, left:left + 13]
        centre = np.array([(cols * window).sum(), (rows * window).sum()]) / window.sum()
        assert np.linalg.norm(centre - (x, y)) < 1.0
    assert weights.sum() / 255 < 5 * 8 * 8  # five dots, nothing else


def test_prepare_with_landmarks(tmp_path):
    source = tmp_path / "src"
    (source / "ann").mkdir(parents=True)
    landmarks = _apply(_similarity(1.2, 10, (30, 20)), ARCFACE_TEMPLATE)
    _face_with_dots(landmarks).save(source / "ann" / "a.png")
    _face_with_dots(landmarks).save(source / "ann" / "b.png")
    listed = tmp_path / "points.txt"
    listed.write_text("ann/a.png " + " ".join(f"{v:.3f}" for v in landmarks.ravel()) + " 0.99\n")
    result = run_facekit("prepare", str(source), str(tmp_path / "out"), "--landmarks",
                         str(listed))
    assert result.returncode == 0, result.stderr
    assert "Wrote 1 images" in result.stdout and "b.png: no landmarks" in result.stdout
    with Image.open(tmp_path / "out" / "ann" / "a.jpg") as image:
        assert image.size == (112, 112)
        bright = np.asarray(image)[..., 0] > 100
    for x, y in np.round(ARCFACE_TEMPLATE).astype(int):
        assert bright[y - 1:y + 2, x - 1:x + 2].any()
    far_away = landmarks + 5000  # points outside the photo: a black face, never written
    listed.write_text("ann/a.png " + " ".join(f"{v:.3f}" for v in landmarks.ravel()) + "\n"
                      "ann/b.png " + " ".join(f"{v:.3f}" for v in far_away.ravel()) + "\n")
    outside = run_facekit("prepare", str(source), str(tmp_path / "out3"), "--landmarks",
                          str(listed))
    assert outside.returncode == 0, outside.stderr
    assert "Wrote 1 images" in outside.stdout
    assert "b.png: its landmarks lie outside the image (only 0% of" in outside.stdout
    assert not (tmp_path / "out3" / "ann" / "b.jpg").exists()
    listed.write_text("ann/a.png 1 2 3\n")
    bad = run_facekit("prepare", str(source), str(tmp_path / "out2"), "--landmarks", str(listed))
    assert bad.returncode == 2 and "expected an image name and 10 coordinates" in bad.stderr


# A miniature IJB protocol.  Each identity's images are one flat colour; the embedding
# model averages the centred pixels, so an image's embedding is its colour's direction and
# every template score is known: cosines of colour directions.
DIRECTIONS = {0: (1, 0, 0), 1: (0, 1, 0), 2: (np.cos(np.pi / 3), np.sin(np.pi / 3), 0)}


def _colour(identity):
    return np.round(127.5 + 100 * np.asarray(DIRECTIONS[identity])).astype(np.uint8)


def _write_ijb(folder):
    """Templates: 1 and 2 of identity 0, 3 of identity 1, 4 of identity 2, and 5 with a
    media of identity 0 (two images) and one of identity 1 (one image, detector score 0.8)."""
    (folder / "loose_crop").mkdir(parents=True)
    (folder / "meta").mkdir()
    images = [(1, 10, 0, 1.0), (1, 11, 0, 1.0), (2, 12, 0, 0.9), (3, 13, 1, 1.0),
              (4, 14, 2, 1.0), (5, 15, 0, 1.0), (5, 15, 0, 1.0), (5, 16, 1, 0.8)]
    rng = np.random.default_rng(0)
    landmarks = ARCFACE_TEMPLATE * 0.6 + 12  # the aligned crop lies inside the 90x90 image
    tid_mid, points = [], []
    for number, (template, media, identity, score) in enumerate(images):
        name = f"{number}.jpg"
        Image.fromarray(np.tile(_colour(identity), (90, 90, 1))).save(
            folder / "loose_crop" / name, quality=100)
        tid_mid.append(f"{name} {template} {media}")
        jitter = landmarks + rng.normal(0, 0.3, landmarks.shape)
        points.append(f"{name} " + " ".join(f"{v:.2f}" for v in jitter.ravel()) + f" {score}")
    (folder / "meta" / "mini_face_tid_mid.txt").write_text("\n".join(tid_mid) + "\n")
    (folder / "meta" / "mini_name_5pts_score.txt").write_text("\n".join(points) + "\n")
    pairs = [(1, 2, 1), (5, 1, 1), (1, 3, 0), (1, 4, 0), (3, 4, 0)]
    (folder / "meta" / "mini_template_pair_label.txt").write_text(
        "".join(f"{a} {b} {label}\n" for a, b, label in pairs))


def _colour_model():
    import keras

    inputs = keras.Input((112, 112, 3))
    centred = keras.layers.Rescaling(1 / 100, offset=-1.275)(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(centred))


def test_ijb_scores_pool_media_then_templates(tmp_path):
    from facekit.eval.ijb import IJBProtocol, evaluate_ijb, image_features, pair_scores, \
        template_features

    _write_ijb(tmp_path / "ijb")
    protocol = IJBProtocol.read(tmp_path / "ijb")
    assert protocol.name == "MINI" and len(protocol.images) == 8
    features = image_features(_colour_model(), protocol, batch_size=3)
    # flip-summed embedding of a flat colour: twice its direction (JPEG rounding aside)
    np.testing.assert_allclose(features[3], 2 * np.array(DIRECTIONS[1]), atol=0.03)
    weighted = features * protocol.detector_scores[:, None]
    ids, pooled = template_features(weighted, protocol.templates, protocol.medias)
    scores = pair_scores(ids, pooled, protocol.pairs)
    # template 5: media 15 averages to 2·d0 (weight 1), media 16 is 0.8·2·d1; summed
    mixed = 2 * np.array(DIRECTIONS[0]) + 1.6 * np.array(DIRECTIONS[1])
    expected = [1.0, mixed[0] / np.linalg.norm(mixed), 0.0, 0.5, np.cos(np.pi / 3 - np.pi / 2)]
    np.testing.assert_allclose(scores, expected, atol=0.02)

    result = evaluate_ijb(_colour_model(), protocol)
    # genuine 1.0 and 0.781 around the impostors' 0.866, 0.5 and 0: the ROC holds TAR 1/2
    # from FAR 0 to 1/3, so every target from 1e-6 to 1e-1 reads 1/2; AUC 1/3·1/2 + 2/3·1
    assert set(result["tar_at_far"].values()) == {0.5}
    assert result["roc"]["far"][0] == pytest.approx(1e-6)
    assert result["roc"]["tar"][0] == 0.5 and result["roc"]["tar"][-1] == 1.0
    assert result["auc"] == pytest.approx(5 / 6)
    unweighted = evaluate_ijb(_colour_model(), protocol, detector_score=False)
    assert unweighted["detector_score"] is False and unweighted["auc"] == pytest.approx(5 / 6)


def test_ijb_cli_and_a_broken_protocol(tmp_path):
    _write_ijb(tmp_path / "ijb")
    model = _colour_model()
    model.name = "basic_model"
    model.save(tmp_path / "basic_model.keras")
    result = invoke_facekit("eval", "--model", tmp_path, "--ijb", tmp_path / "ijb", "--plot",
                            tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert "MINI 1:1 verification: 5 pairs of 5 templates (8 images)" in result.stdout
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report["sets"][0]["tar_at_far"]) == {"1e-06", "1e-05", "1e-04", "1e-03", "1e-02",
                                                "1e-01"}
    (tmp_path / "ijb" / "meta" / "mini_name_5pts_score.txt").write_text("0.jpg 1 2\n")
    broken = run_facekit("eval", "--model", str(tmp_path), "--ijb", str(tmp_path / "ijb"))
    assert broken.returncode == 2 and "expected an image name and 10 coordinates" in \
        broken.stderr  # refused before TensorFlow loads the model: a quick process


def test_read_landmarks_refuses_a_bad_file(tmp_path):
    from facekit.data.align import read_landmarks

    path = tmp_path / "l.txt"
    path.write_text("a.jpg " + " ".join(["nan"] * 10) + "\n")
    with pytest.raises(FacekitError, match="not finite"):
        read_landmarks(path)
