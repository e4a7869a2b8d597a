"""Fine-tuning data: GLUE, CoNLL-2003 NER and SQuAD readers and encoders, and the cached
encoded splits they become."""
