"""crlm_lib: deep-learning prognosis of colorectal cancer liver metastasis after resection.

A thin library behind the numbered notebooks: data (TCIA layout, synthetic cohort,
preprocessing), models (4D-ACFNet, STAR, STG and the baselines the papers compare), losses,
metrics, one training engine, evaluation protocols and explanations. See ``docs/interfaces.md``.
"""

__version__ = "0.1.0"
