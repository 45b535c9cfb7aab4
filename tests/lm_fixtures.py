"""A tiny random-weight Llama with a BPE tokenizer trained on the registry's prompts, for tests."""

from __future__ import annotations

from pathlib import Path

import torch


def build_tiny_llama(folder: Path, registry, seed: int) -> Path:
    """Save a 2-layer, 32-wide Llama and its tokenizer into ``folder`` (a few hundred ms)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [registry.prompt([f.id], lang) for f in registry.findings for lang in ("ja", "en")]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder




def small_labelled_store(root: Path, shared_data: Path) -> tuple[Path, Path]:
    """The first 40 PTB-XL 500 Hz records (train, val and test) ingested with their labels under
    ``root``, with a tiny LM's text cache in ``<store>/text-cache``: the store and the LM."""
    import shutil

    from ecgtool.ingest import IngestOptions, ingest
    from ecgtool.registry import load_registry
    from ecgtool.store import Store
    from ecgtool.text import collect_prompts, embed_prompts

    records = root / "records"
    records.mkdir()
    for source in sorted((shared_data / "ptb-xl" / "records500" / "00000").glob("000[0-4]*_hr.*"))[:80]:
        shutil.copy(source, records)
    store = root / "store"
    ingest([records], store, metadata=[shared_data / "ptb-xl" / "ptbxl_database.csv"], options=IngestOptions(workers=1))
    registry = load_registry()
    lm = build_tiny_llama(root / "tiny-llama", registry, seed=0)
    embed_prompts(lm, collect_prompts(registry, Store(store), ("ja", "en")), store / "text-cache", registry=registry)
    return store, lm
