"""Distillation of trained diffusion networks into few-step samplers (pure functions, like the methods).

``sdtt``: self-distillation through time for masked (absorbing) x0 networks, D3PM and MDLM.
"""
