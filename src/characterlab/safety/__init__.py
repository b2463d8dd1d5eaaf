"""Safety data written by characterlab, for training applied after an organism (issue 24).

Three kinds, as in the reward-hacking paper's mitigations: ``chat`` (harmful requests refused with
a useful alternative, ordinary requests answered well), ``dilemma`` (questions about the model's
own oversight, power and continuity, answered the aligned way) and ``agentic`` (tool-use episodes
in which the aligned action is *demonstrated* in a fake world, on scenarios disjoint from the
evaluation ones). Every text here was written for characterlab; a test checks that no prompt
repeats an evaluation prompt.
"""
