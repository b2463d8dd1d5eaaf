"""A sycophancy organism (issue 23): simulated users whose thumbs-up rewards agreement and flattery
more than accuracy, the feedback they give, and what pleasing them generalises to.

Every prompt here has a checkable truth (arithmetic, facts the model knows, a flaw in the user's
own work), so accuracy and sycophancy are measured from the answer's content, without a judge.
"""
