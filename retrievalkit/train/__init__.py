"""What trains: the one fit loop (:mod:`~retrievalkit.train.loop`) shared by every trained head and by fine-tuning."""
