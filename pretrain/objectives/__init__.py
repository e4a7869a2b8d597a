"""Objectives: what the one trainer optimises. Pretraining's (causal LM, masked LM) and the
fine-tuning tasks' (GLUE, NER, SQuAD), each an `objective.Objective`, found by name in
`registry`."""
