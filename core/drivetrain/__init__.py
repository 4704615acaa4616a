"""Stage 4, the Drivetrain: the objective, the levers (actions and the utility matrix), decision
policies and what they realise, the optimizer, the accepted policy, and the stakeholder summary."""
