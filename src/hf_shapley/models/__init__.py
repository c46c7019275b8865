"""The self-explaining models: configs, models, games, losses and pipelines.

Every file here travels with each saved model (``save_pretrained`` copies the model's and the
pipeline's code and what they import), so that ``trust_remote_code=True`` loads a model
without this package. The folder therefore stays flat, its files import each other with
relative imports only, and nothing here imports the rest of ``hf_shapley``.
"""
