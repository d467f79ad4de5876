"""Training: `trainer` is the child process (LoRA on the Hugging Face stack); `jobs` starts,
watches, cancels and reattaches it through its run folder."""
