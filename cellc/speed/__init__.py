"""`cellc speed`: backend timings against torch.nn.LSTM / torch.nn.GRU, written to reports/speed.md."""
