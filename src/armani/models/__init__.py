"""Model definitions. Models never import the trainer, accelerate or gradio."""
