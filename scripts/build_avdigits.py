#!/usr/bin/env python
"""Build the embedded AV-digits dataset (image + spoken audio + text), deterministically.

Sources (no download):
- images: the 1,797 handwritten digits bundled with scikit-learn (``load_digits``, 8x8, 17 grey
  levels), upsampled to 32x32 with bilinear interpolation and saved as 8-bit PNG;
- audio (train/val/test): the digit word synthesised with espeak-ng over English voices x voice
  variants, speeds and pitches, resampled to 8 kHz, trimmed, optionally mixed with background noise
  at a random SNR, saved as 8-bit FLAC;
- audio (test_real): the recorded human digits of Debian's ``asterisk-core-sounds-en-wav``
  (Allison Smith, 8 kHz, CC-BY-SA-3.0) paired with the test images;
- text: generated captions, partial "hints" and question/answer pairs (with 10 answers each),
  using stroke attributes measured from each image.

Usage: ``python scripts/build_avdigits.py --out data/avdigits`` (needs ``espeak-ng`` on PATH).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image
from scipy.signal import resample_poly
from sklearn.datasets import load_digits

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = [
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
]
VARIANTS = ["", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2", "+f3", "+f4",
            "+f5", "+croak", "+klatt", "+klatt2", "+klatt3", "+whisper", "+Andy", "+Annie"]
SAMPLE_RATE = 8000
IMAGE_SIZE = 32
REAL_SPEECH_DIR = Path("/usr/share/asterisk/sounds/en/digits")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


def stroke_attributes(img8: np.ndarray) -> dict[str, float]:
    """Measure simple stroke statistics of an 8x8 digit (values 0..16)."""
    ink = img8 / 16.0
    rows = np.where(ink.sum(1) > 0.5)[0]
    cols = np.where(ink.sum(0) > 0.5)[0]
    height = float(rows.max() - rows.min() + 1) if rows.size else 0.0
    width = float(cols.max() - cols.min() + 1) if cols.size else 0.0
    total = ink.sum() + 1e-6
    top_mass = float(ink[:4].sum() / total)
    return {"ink": float(ink.mean()), "width": width, "height": height, "top_mass": top_mass}


def tertile_word(value: float, cuts: tuple[float, float], words: tuple[str, str, str]) -> str:
    return words[0] if value < cuts[0] else words[1] if value < cuts[1] else words[2]


def make_hint(digit: int, thickness: str, rng: np.random.Generator) -> str:
    """A partial textual clue: informative about the digit but rarely sufficient alone."""
    clues = []
    kinds = rng.choice(["parity", "greater", "less", "prime", "three", "sum", "none"], size=2,
                       replace=False, p=[0.22, 0.18, 0.18, 0.12, 0.1, 0.08, 0.12])
    for kind in kinds:
        if kind == "parity":
            clues.append("it is an " + ("even" if digit % 2 == 0 else "odd") + " number")
        elif kind == "greater" and digit > 0:
            clues.append(f"it is greater than {WORDS[int(rng.integers(0, digit))]}")
        elif kind == "less" and digit < 9:
            clues.append(f"it is less than {WORDS[int(rng.integers(digit + 1, 10))]}")
        elif kind == "prime":
            clues.append("it is " + ("a prime" if digit in (2, 3, 5, 7) else "not a prime"))
        elif kind == "three":
            clues.append("it is " + ("" if digit % 3 == 0 else "not ") + "divisible by three")
        elif kind == "sum":
            a = int(rng.integers(0, digit + 1))
            clues.append(f"it equals {WORDS[a]} plus {WORDS[digit - a]}")
    if not clues:
        return f"a handwritten digit drawn with {thickness} strokes"
    return " and ".join(clues)


def make_caption(digit: int, thickness: str, shape: str, balance: str) -> str:
    parity = "even" if digit % 2 == 0 else "odd"
    return f"a {shape} handwritten {WORDS[digit]} with {thickness} strokes , {balance} , an {parity} digit"


def human_answers(correct: str, alternatives: list[str], rng: np.random.Generator) -> list[str]:
    """Ten annotator answers: mostly the correct one (in varied surface forms), a few mistakes."""
    answers = []
    for _ in range(10):
        r = rng.random()
        if r < 0.1 and alternatives:
            answers.append(str(rng.choice(alternatives)))
        else:
            answers.append(correct)
    return answers


def make_qa(digit: int, thickness: str, rng: np.random.Generator) -> list[dict]:
    k = int(rng.integers(1, 9))
    qa = [
        ("what digit is shown ?", WORDS[digit], WORDS),
        ("is the digit even ?", "yes" if digit % 2 == 0 else "no", ["yes", "no"]),
        (f"is the digit greater than {WORDS[k]} ?", "yes" if digit > k else "no", ["yes", "no"]),
        (f"what is the digit plus {WORDS[k]} ?", str(digit + k), [str(v) for v in range(19)]),
        ("how thick are the strokes ?", thickness, ["thin", "medium", "thick"]),
    ]
    out = []
    for question, answer, alternatives in qa:
        alts = [a for a in alternatives if a != answer]
        answers = human_answers(answer, alts, rng)
        # The official VQA evaluation maps number words to digits; keep some word forms.
        answers = [WORDS[int(a)] if a.isdigit() and int(a) < 10 and rng.random() < 0.2 else a
                   for a in answers]
        out.append({"question": question, "answer": answer, "answers": answers})
    return out


def synthesise(word: str, voice: str, speed: int, pitch: int, tmp: Path) -> np.ndarray:
    wav = tmp / "say.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav),
                    word], check=True, capture_output=True)
    audio, rate = sf.read(wav, dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(1)
    return resample_poly(audio, SAMPLE_RATE, rate).astype(np.float32) if rate != SAMPLE_RATE else audio


def trim(audio: np.ndarray, threshold: float = 0.03, margin: int = 240) -> np.ndarray:
    loud = np.where(np.abs(audio) > threshold * np.abs(audio).max())[0]
    if loud.size == 0:
        return audio
    return audio[max(0, loud[0] - margin): loud[-1] + margin]


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(audio.size + 64).astype(np.float32)
    coloured = np.convolve(white, np.ones(8, dtype=np.float32) / 8, mode="valid")[: audio.size]
    if rng.random() < 0.5:  # alternate between low-passed (babble-like) and white noise
        noise = coloured
    else:
        noise = white[: audio.size]
    signal_power = float(np.mean(audio ** 2)) + 1e-12
    noise_power = float(np.mean(noise ** 2)) + 1e-12
    noise *= np.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return audio + noise


def normalise(audio: np.ndarray) -> np.ndarray:
    peak = float(np.abs(audio).max()) or 1.0
    return np.clip(audio / peak * 0.9, -1, 1).astype(np.float32)


def write_flac(path: Path, audio: np.ndarray) -> None:
    """8-bit FLAC (telephone-grade, ~48 dB quantisation SNR) keeps the repository small."""
    buffer = io.BytesIO()
    sf.write(buffer, normalise(audio), SAMPLE_RATE, format="FLAC", subtype="PCM_S8")
    path.write_bytes(buffer.getvalue())


def build(out: Path, seed: int, noise_prob: float, snr_range: tuple[float, float]) -> None:
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not on PATH: apt-get install espeak-ng")
    rng = np.random.default_rng(seed)
    digits = load_digits()
    images8 = digits.images.astype(np.float32)
    labels = digits.target.astype(int)
    n = len(labels)
    attributes = [stroke_attributes(im) for im in images8]
    ink_cuts = tuple(np.quantile([a["ink"] for a in attributes], [1 / 3, 2 / 3]))
    aspect = [a["width"] / max(a["height"], 1) for a in attributes]
    aspect_cuts = tuple(np.quantile(aspect, [1 / 3, 2 / 3]))

    order = rng.permutation(n)
    n_train = int(round(SPLIT_FRACTIONS[0] * n))
    n_val = int(round(SPLIT_FRACTIONS[1] * n))
    split_of = {}
    for rank, idx in enumerate(order):
        split_of[int(idx)] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"

    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    (out / "audio").mkdir()
    (out / "audio_real").mkdir()
    records = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for idx in range(n):
            digit = int(labels[idx])
            sample_id = f"{idx:04d}"
            img = Image.fromarray((images8[idx] / 16.0 * 255).astype(np.uint8), mode="L")
            img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
            img.save(out / "images" / f"{sample_id}.png", optimize=True)

            voice = f"{VOICES[int(rng.integers(len(VOICES)))]}{VARIANTS[int(rng.integers(len(VARIANTS)))]}"
            speed = int(rng.integers(110, 230))
            pitch = int(rng.integers(10, 90))
            audio = trim(synthesise(WORDS[digit], voice, speed, pitch, tmp))
            snr = None
            if rng.random() < noise_prob:
                snr = float(rng.uniform(*snr_range))
                audio = add_noise(audio, snr, rng)
            write_flac(out / "audio" / f"{sample_id}.flac", audio)

            attrs = attributes[idx]
            thickness = tertile_word(attrs["ink"], ink_cuts, ("thin", "medium", "thick"))
            shape = tertile_word(aspect[idx], aspect_cuts, ("narrow", "regular", "wide"))
            balance = "top heavy" if attrs["top_mass"] > 0.55 else "bottom heavy" if attrs["top_mass"] < 0.45 else "balanced"
            records.append({
                "id": sample_id,
                "split": split_of[idx],
                "label": digit,
                "image": f"images/{sample_id}.png",
                "audio": f"audio/{sample_id}.flac",
                "caption": make_caption(digit, thickness, shape, balance),
                "hint": make_hint(digit, thickness, rng),
                "qa": make_qa(digit, thickness, rng),
                "attributes": {**{k: round(v, 4) for k, v in attrs.items()}, "thickness": thickness,
                               "shape": shape, "balance": balance},
                "speech": {"voice": voice, "speed": speed, "pitch": pitch,
                           "snr_db": None if snr is None else round(snr, 2)},
            })

    # Real human speech: one recorded clip per digit, paired with every test image of that digit.
    if REAL_SPEECH_DIR.is_dir():
        for digit in range(10):
            audio, rate = sf.read(REAL_SPEECH_DIR / f"{digit}.wav", dtype="float32")
            if rate != SAMPLE_RATE:
                audio = resample_poly(audio, SAMPLE_RATE, rate).astype(np.float32)
            write_flac(out / "audio_real" / f"{digit}.flac", trim(audio))
        for record in [r for r in records if r["split"] == "test"]:
            records.append({**record, "id": record["id"] + "r", "split": "test_real",
                            "audio": f"audio_real/{record['label']}.flac",
                            "speech": {"voice": "human (Allison Smith, asterisk-core-sounds-en)",
                                       "speed": None, "pitch": None, "snr_db": None}})
    else:
        print(f"warning: {REAL_SPEECH_DIR} not found; no test_real split (apt-get install asterisk-core-sounds-en-wav)")

    with open(out / "metadata.jsonl", "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    build_tokenizer(records, out / "tokenizer.json")
    counts = {s: sum(r["split"] == s for r in records) for s in ("train", "val", "test", "test_real")}
    info = {"name": "avdigits", "version": 1, "seed": seed, "sample_rate": SAMPLE_RATE,
            "image_size": IMAGE_SIZE, "num_classes": 10, "classes": WORDS, "counts": counts,
            "noise_prob": noise_prob, "snr_range_db": list(snr_range)}
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))


def build_tokenizer(records: list[dict], path: Path) -> None:
    """A word-level HF tokenizer over every text field, with BERT-style special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordLevelTrainer(special_tokens=specials, min_frequency=1)
    corpus = []
    for r in records:
        corpus += [r["caption"], r["hint"]] + [q["question"] for q in r["qa"]] + [a for q in r["qa"] for a in q["answers"]]
    tokenizer.train_from_iterator(corpus, trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tokenizer.save(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/avdigits"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-prob", type=float, default=0.7,
                        help="fraction of synthetic clips mixed with background noise")
    parser.add_argument("--snr-min", type=float, default=-8.0)
    parser.add_argument("--snr-max", type=float, default=15.0)
    args = parser.parse_args()
    build(args.out, args.seed, args.noise_prob, (args.snr_min, args.snr_max))


if __name__ == "__main__":
    main()
