"""The tiny world: a simulator small enough to hold in your head, with a gold judge.

`knowledge` (facts, prompt families, answer styles) -> `responses` (the answer writer) -> `world`
(`World`: prompts, splits, answers) -> `gold` (the judge and the simulated annotators); `build_data`
writes the shipped data files and `tiny` builds the tiny SFT policy from them.
"""
