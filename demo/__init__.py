"""The ARMANI Gradio app: ``python demo/app.py [--checkpoint DIR]`` (see demo/app.py)."""
