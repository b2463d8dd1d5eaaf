"""Training: LoRA SFT (TRL + PEFT); train-time data transforms such as inoculation prompts."""
