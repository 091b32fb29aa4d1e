"""The Latte family's networks: causal 3D VAE, Latte DiT and a basic 3D U-Net."""
