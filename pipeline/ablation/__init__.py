"""The ablation: the baseline with one knob changed at a time, over seeds; its tables and
statistics (paired differences, intervals)."""
