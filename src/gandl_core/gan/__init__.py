"""GAN-DL's pretext half: the scaled-down StyleGAN2 and how it is trained.

``stylegan2`` (networks), ``losses`` (logistic + R1 + path length, WGAN-GP), ``augment`` (ADA),
``quality`` (sliced Wasserstein distance), ``train_config`` (:class:`TrainConfig` and presets) and
``train`` (the loop). The other half, turning a trained discriminator into an embedding, lives in
``gandl_core.featurizers`` and ``gandl_core.embed``.
"""
