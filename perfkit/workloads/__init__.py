"""Workloads beyond one layer's pass: AlexNet's training augmentation, torch.distributed runs, training loops, datasets."""
