"""Ground modules: errors and storage, which import nothing of the project, so that every
layer above (models, input_pipeline, the library, entry points) can use them."""
