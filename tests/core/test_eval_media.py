"""Media metrics behave: FID ~ 0 on identical data and large against noise, IS bounds, pitch accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genq.core.data.builtin_media import TONE_NOTES, digits, tone, tones
from genq.core.eval.audio import (
    audio_metrics,
    dominant_frequency,
    pitch_accuracy,
    reference_pitches,
    spectral_distance,
)
from genq.core.eval.images import (
    features_and_probs,
    frechet_distance,
    image_metrics,
    inception_score,
    train_classifier,
)


@pytest.fixture(scope="module")
def digit_data():
    return digits(8)


@pytest.fixture(scope="module")
def classifier(digit_data):
    return train_classifier(digit_data, steps=150, seed=0, batch_size=64)


def test_classifier_learns_the_digits(digit_data, classifier):
    assert classifier.accuracy(digit_data.floats(), digit_data.labels) > 0.9


def test_fid_is_zero_on_the_same_data_and_large_against_noise(digit_data, classifier):
    real = digit_data.floats()
    noise = torch.rand(500, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    f_real, _ = features_and_probs(classifier, real)
    f_noise, _ = features_and_probs(classifier, noise)
    same = frechet_distance(f_real, f_real)
    halves = frechet_distance(f_real[::2], f_real[1::2])
    far = frechet_distance(f_real, f_noise)
    assert same < 1e-6 * far
    assert halves < 0.2 * far  # two samples of the same distribution are close


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 2))
    b = rng.normal(0, 2, (20000, 2)) + np.array([3.0, 0.0])
    # ||mu||^2 + sum (sigma_a - sigma_b)^2 for diagonal covariances = 9 + 2 * (1 - 2)^2
    assert frechet_distance(a, b) == pytest.approx(11.0, rel=0.05)


def test_inception_score_bounds():
    confident_and_diverse = np.eye(10)[np.arange(100) % 10] * 0.999 + 0.0001
    one_class = np.tile(np.eye(10)[3], (100, 1))
    assert inception_score(confident_and_diverse) == pytest.approx(10, rel=0.02)
    assert inception_score(one_class) == pytest.approx(1.0, abs=1e-3)


def test_image_metrics_on_real_images_with_their_labels(digit_data, classifier):
    x, y = digit_data.floats()[:400], digit_data.labels[:400]
    m = image_metrics(classifier, digit_data.floats(), x, labelled=True, requested=y)
    assert m["eval/class_accuracy"] > 0.9
    assert m["eval/inception_score"] > 5  # confident and spread over the 10 classes
    wrong = image_metrics(classifier, digit_data.floats(), x, labelled=True, requested=(y + 1) % 10)
    assert wrong["eval/class_accuracy"] < 0.1


def test_unlabelled_data_gets_fid_from_a_fixed_random_cnn(digit_data):
    unlabelled = type(digit_data)(digit_data.images[:300])
    net_a, net_b = train_classifier(unlabelled, seed=5), train_classifier(unlabelled, seed=5)
    x = unlabelled.floats()
    assert torch.equal(net_a.features(x), net_b.features(x))
    m = image_metrics(net_a, x, torch.rand(300, 1, 8, 8), labelled=False)
    assert set(m) == {"eval/fid"} and m["eval/fid"] > 0


def test_pitch_accuracy_of_pure_tones_is_one_and_of_noise_is_low():
    rate = 8000
    data = tones(rate, clips_per_note=2)
    pitches = reference_pitches(data)
    pure = [0.5 * np.sin(2 * np.pi * f * np.arange(rate) / rate) for f in TONE_NOTES.values()]
    assert pitch_accuracy(pure, rate, pitches) == 1.0
    noise = [np.random.default_rng(i).uniform(-0.5, 0.5, rate) for i in range(8)]
    assert pitch_accuracy(noise, rate, pitches) <= 0.25
    off_pitch = [0.5 * np.sin(2 * np.pi * f * 1.06 * np.arange(rate) / rate) for f in TONE_NOTES.values()]
    assert pitch_accuracy(off_pitch, rate, pitches) == 0.0  # 6% sharp is outside the 3% tolerance
    assert dominant_frequency(np.zeros(rate), rate) is None


def test_spectral_distance_is_zero_for_the_same_clips_and_grows_for_noise():
    rate = 8000
    data = tones(rate, clips_per_note=2)
    assert spectral_distance(data.clips, data.clips) == pytest.approx(0.0, abs=1e-9)
    similar = [tone(f, rate, rng=np.random.default_rng(99)) for f in TONE_NOTES.values()]
    noise = [np.random.default_rng(i).uniform(-0.5, 0.5, rate) for i in range(8)]
    assert spectral_distance(similar, data.clips) < spectral_distance(noise, data.clips)
    # The distance is in dB: the same clips at half the volume are 20*log10(2) ~ 6 dB away (with the floor
    # out of the way, since quiet bins pinned to it would not move).
    half = [0.5 * c for c in data.clips]
    assert spectral_distance(half, data.clips, floor_db=200) == pytest.approx(20 * np.log10(2), rel=0.03)


def test_audio_metrics_tell_the_right_notes_from_wrong_ones():
    rate = 8000
    data = tones(rate, clips_per_note=2)
    right = [tone(f, rate, rng=np.random.default_rng(99)) for f in TONE_NOTES.values()]
    sharp = [tone(f * 1.06, rate, rng=np.random.default_rng(99)) for f in TONE_NOTES.values()]
    m, off = audio_metrics(right, data), audio_metrics(sharp, data)
    assert m["eval/spectral_distance"] == spectral_distance(right, data.clips)
    # Same notes with other phases, overtones and decays: about 1 dB; 6% sharp (outside the 3% pitch
    # tolerance): about 19 dB.
    assert m["eval/pitch_accuracy"] == 1.0 and m["eval/spectral_distance"] < 2.0
    assert off["eval/pitch_accuracy"] == 0.0 and off["eval/spectral_distance"] > 10.0
