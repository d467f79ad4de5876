import json
from pathlib import Path

def make_tiny(folder: Path, arch: str = "gemma3", seed: int = 0, layers: int = 6) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from pet.templates import CHATML, GEMMA3
    if arch == "gemma3":
        specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE(unk_token=specials[3] if arch == "gemma3" else None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    corpus = ["user model assistant write a prompt about the sea", "You are an expert. Task: improve the request."] * 3
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    torch.manual_seed(seed)
    if arch == "gemma3":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig
        tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
        tok.chat_template = GEMMA3
        cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                               num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                               max_position_embeddings=1024, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, sliding_window=64, initializer_range=0.2,
                               layer_types=["sliding_attention" if i % 6 < 5 else "full_attention" for i in range(layers)])
        model = Gemma3ForCausalLM(cfg)
    else:
        from transformers import LlamaConfig, LlamaForCausalLM
        tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<|endoftext|>")
        tok.chat_template = CHATML
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                          pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          tie_word_embeddings=True, initializer_range=0.2, rope_theta=10000.0)
        model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
