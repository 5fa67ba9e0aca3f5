"""A cell that never ends: the grader interrupts it after the cell's limit and the notebook goes on."""

while True:
    pass
