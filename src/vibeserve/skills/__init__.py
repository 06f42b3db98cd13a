"""The serving-systems skills library: the package is also the data.

Each skill is a folder ``<layer>/<name>/`` here with a ``SKILL.md`` in Agent Skills format, details in
``references/`` and runnable code in ``scripts/``. ``library`` loads and validates skills, ``selection``
picks the ones that fit a target, ``install`` copies them where the agent harnesses look, ``agent_tools``
serves them to the built-in agent, and ``cli`` is ``vibeserve skills``. See docs/skills.md.
"""
