//! Speculative decoding flags, with llama.cpp's names, and the drafter
//! they describe. Unlike llama.cpp, a draft model alone (`-md`) turns
//! speculation on.

use crate::load;
use anyhow::{bail, Context, Result};
use edgellama_backend::CpuBackend;
use edgellama_engine::batch::{SpecConfig, SPEC_MAX_ROWS};
use edgellama_engine::spec::{check_vocab, Drafter, NgramSimple, SpecParams, SpecStats, SpecType};
use edgellama_models::CausalLm;
use edgellama_tokenizer::Tokenizer;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args, Debug, Clone)]
pub struct SpecArgs {
    /// Draft model for speculative decoding (also -md, --spec-draft-model):
    /// a small model of the same vocabulary; given alone, it turns
    /// speculation on
    #[arg(
        long = "model-draft",
        visible_alias = "spec-draft-model",
        value_name = "FILE"
    )]
    pub model_draft: Option<PathBuf>,
    /// The draft model from a Hugging Face repository (also -hfd,
    /// --spec-draft-hf), as --hf-repo
    #[arg(
        long = "hf-repo-draft",
        visible_alias = "spec-draft-hf",
        value_name = "ORG/NAME[:QUANT]",
        conflicts_with = "model_draft"
    )]
    pub hf_repo_draft: Option<String>,
    /// Speculative decoding kinds, comma-separated, tried in order:
    /// ngram-simple (drafts looked up in the text so far), draft-simple (the
    /// draft model), none (default: draft-simple with a draft model, else
    /// none)
    #[arg(long = "spec-type", value_delimiter = ',', value_name = "TYPES")]
    pub spec_type: Vec<SpecType>,
    /// Tokens the draft model proposes per step at most (also --draft-max)
    #[arg(
        long = "spec-draft-n-max",
        alias = "draft-max",
        alias = "draft",
        default_value_t = 3
    )]
    pub n_max: usize,
    /// Drafts shorter than this are not checked (also --draft-min)
    #[arg(long = "spec-draft-n-min", alias = "draft-min", default_value_t = 0)]
    pub n_min: usize,
    /// The draft model stops proposing where its best token is less likely
    /// than this (greedy decoding; also --draft-p-min)
    #[arg(
        long = "spec-draft-p-min",
        alias = "draft-p-min",
        default_value_t = 0.0
    )]
    pub p_min: f32,
    /// Draft at every step, even while drafting loses to plain decoding
    /// (by default drafting pauses then; for measuring)
    #[arg(long = "spec-always")]
    pub always: bool,
    /// Tokens matched by ngram-simple (llama.cpp's default: 12)
    #[arg(long = "spec-ngram-simple-size-n", default_value_t = NgramSimple::default().size_n)]
    pub ngram_n: usize,
    /// Tokens proposed by ngram-simple at most (llama.cpp's default: 48)
    #[arg(long = "spec-ngram-simple-size-m", default_value_t = NgramSimple::default().size_m)]
    pub ngram_m: usize,
}

impl Default for SpecArgs {
    fn default() -> Self {
        SpecArgs {
            model_draft: None,
            hf_repo_draft: None,
            spec_type: Vec::new(),
            n_max: 3,
            n_min: 0,
            p_min: 0.0,
            always: false,
            ngram_n: NgramSimple::default().size_n,
            ngram_m: NgramSimple::default().size_m,
        }
    }
}

/// The drafters a command was asked for, checked before anything loads.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecPlan {
    pub types: Vec<SpecType>,
    pub params: SpecParams,
}

impl SpecArgs {
    fn has_draft(&self) -> bool {
        self.model_draft.is_some() || self.hf_repo_draft.is_some()
    }

    /// What to draft with, in order; `None` when speculation is off.
    pub fn plan(&self) -> Result<Option<SpecPlan>> {
        if !(0.0..=1.0).contains(&self.p_min) {
            bail!("--spec-draft-p-min must be in [0, 1], got {}", self.p_min);
        }
        if self.ngram_n == 0 || self.ngram_m == 0 {
            bail!("--spec-ngram-simple-size-n and -size-m must be at least 1");
        }
        let mut types: Vec<SpecType> = if self.spec_type.is_empty() && self.has_draft() {
            vec![SpecType::DraftSimple]
        } else {
            self.spec_type.clone()
        };
        if types.contains(&SpecType::None) {
            if types.len() > 1 {
                bail!("--spec-type none cannot be combined with other kinds");
            }
            return Ok(None);
        }
        types.dedup();
        if types.is_empty() {
            return Ok(None);
        }
        if types.contains(&SpecType::DraftSimple) {
            if !self.has_draft() {
                bail!("--spec-type draft-simple needs a draft model (-md FILE or -hfd REPO)");
            }
            if self.n_max == 0 {
                bail!("--spec-draft-n-max must be at least 1 with a draft model");
            }
        } else if self.has_draft() {
            bail!("a draft model was given but --spec-type does not include draft-simple");
        }
        // A lookup costs nothing when it misses: it goes first.
        types.sort_by_key(|t| *t != SpecType::NgramSimple);
        Ok(Some(SpecPlan {
            types,
            params: SpecParams {
                n_min: self.n_min,
                paced: !self.always,
            },
        }))
    }

    /// The draft model's file, downloaded first when it comes from the hub.
    pub fn draft_path(&self, hf_token: Option<&str>) -> Result<Option<PathBuf>> {
        match (&self.model_draft, &self.hf_repo_draft) {
            (Some(p), _) => Ok(Some(p.clone())),
            (None, Some(repo)) => {
                crate::commands::pull::fetch_model(repo, None, hf_token).map(Some)
            }
            (None, None) => Ok(None),
        }
    }

    /// The draft model of `plan`, if it has one, loaded on `backend` (it
    /// shares the target's threads) and checked against `target_tok`, with
    /// the file it came from.
    pub fn draft_model(
        &self,
        plan: &SpecPlan,
        target_tok: &Tokenizer,
        backend: &Arc<CpuBackend>,
        hf_token: Option<&str>,
    ) -> Result<Option<(PathBuf, Arc<dyn CausalLm>)>> {
        if !plan.types.contains(&SpecType::DraftSimple) {
            return Ok(None);
        }
        let Some(path) = self.draft_path(hf_token)? else {
            bail!("draft-simple needs a draft model");
        };
        let model = load_draft(&path, target_tok, backend)?;
        Ok(Some((path, model)))
    }

    /// The engine's drafting for `plan`, with the `draft` model loaded by
    /// [`SpecArgs::draft_model`] (its most likely tokens are drafted, so a
    /// seeded reply is the one decoding without drafts gives); `max_rows`
    /// bounds a server step's rows.
    pub fn config(
        &self,
        plan: &SpecPlan,
        draft: Option<Arc<dyn CausalLm>>,
        max_rows: usize,
    ) -> SpecConfig {
        SpecConfig {
            ngram: plan
                .types
                .contains(&SpecType::NgramSimple)
                .then(|| NgramSimple::new(self.ngram_n, self.ngram_m)),
            draft: draft.map(|m| (m, self.n_max, self.p_min)),
            n_min: plan.params.n_min,
            max_rows,
        }
    }

    /// The drafter of `plan` for one sequence of up to `n_ctx` positions of
    /// a target read by `target_tok`.
    pub fn drafter(
        &self,
        plan: &SpecPlan,
        target_tok: &Tokenizer,
        n_ctx: usize,
        backend: &Arc<CpuBackend>,
        hf_token: Option<&str>,
    ) -> Result<Box<dyn Drafter>> {
        let draft = self.draft_model(plan, target_tok, backend, hf_token)?;
        let config = self.config(plan, draft.map(|d| d.1), SPEC_MAX_ROWS);
        sequence_drafter(&config, n_ctx)
    }
}

/// A drafter of `config` for one sequence of up to `n_ctx` positions.
pub fn sequence_drafter(config: &SpecConfig, n_ctx: usize) -> Result<Box<dyn Drafter>> {
    config
        .drafter(n_ctx)
        .with_context(|| format!("cannot make the draft model's KV cache of {n_ctx} positions"))?
        .context("speculative decoding was asked for without a drafter")
}

/// Loads a draft model and checks that its vocabulary is the target's.
pub fn load_draft(
    path: &std::path::Path,
    target_tok: &Tokenizer,
    backend: &Arc<CpuBackend>,
) -> Result<Arc<dyn CausalLm>> {
    let file = load::open_gguf(path, edgellama_gguf::LoadMode::fastest())?;
    let tok = load::tokenizer(&file, path)?;
    check_vocab(target_tok, &tok)
        .with_context(|| format!("{} cannot draft for this model", path.display()))?;
    Ok(Arc::from(load::model_on(&file, path, backend.clone())?))
}

/// The closing line about drafts, as `run` and `chat --stats` print it.
pub fn describe(stats: &SpecStats) -> String {
    format!(
        "speculative: {} drafted, {} accepted ({:.1}%), {} checks",
        stats.n_drafted,
        stats.n_accepted,
        100.0 * stats.acceptance(),
        stats.n_steps
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        spec: SpecArgs,
    }

    fn plan(args: &[&str]) -> Result<Option<SpecPlan>> {
        let argv = std::iter::once("x".into()).chain(args.iter().map(std::ffi::OsString::from));
        Cmd::try_parse_from(load::expand_shorthands(argv))?
            .spec
            .plan()
    }

    fn types(args: &[&str]) -> Vec<SpecType> {
        plan(args).unwrap().map_or(Vec::new(), |p| p.types)
    }

    #[test]
    fn a_draft_model_alone_turns_speculation_on() {
        assert_eq!(types(&[]), []);
        assert_eq!(types(&["-md", "d.gguf"]), [SpecType::DraftSimple]);
        assert_eq!(types(&["--model-draft=d.gguf"]), [SpecType::DraftSimple]);
        assert_eq!(types(&["-hfd", "org/d"]), [SpecType::DraftSimple]);
        assert_eq!(
            types(&["--spec-type", "ngram-simple"]),
            [SpecType::NgramSimple]
        );
        assert_eq!(
            types(&["-md", "d.gguf", "--spec-type", "draft-simple,ngram-simple"]),
            [SpecType::NgramSimple, SpecType::DraftSimple]
        );
        assert_eq!(types(&["-md", "d.gguf", "--spec-type", "none"]), []);
    }

    #[test]
    fn llama_cpp_spellings_of_the_draft_limits() {
        let argv = |a: &[&str]| {
            let v = std::iter::once("x".into()).chain(a.iter().map(std::ffi::OsString::from));
            Cmd::try_parse_from(load::expand_shorthands(v))
                .unwrap()
                .spec
        };
        let s = argv(&[
            "--draft-max",
            "5",
            "--draft-min",
            "2",
            "--draft-p-min",
            "0.5",
        ]);
        assert_eq!((s.n_max, s.n_min, s.p_min), (5, 2, 0.5));
        let s = argv(&[
            "--spec-draft-n-max",
            "7",
            "--spec-draft-n-min=1",
            "--spec-draft-p-min",
            "0.9",
        ]);
        assert_eq!((s.n_max, s.n_min, s.p_min), (7, 1, 0.9));
        let s = argv(&[]);
        assert_eq!((s.n_max, s.n_min, s.p_min), (3, 0, 0.0));
    }

    #[test]
    fn contradictions_are_refused_before_loading() {
        for (args, want) in [
            (&["--spec-type", "draft-simple"][..], "needs a draft model"),
            (
                &["-md", "d.gguf", "--spec-type", "ngram-simple"],
                "does not include draft-simple",
            ),
            (&["--spec-type", "none,ngram-simple"], "cannot be combined"),
            (&["-md", "d.gguf", "--spec-draft-n-max", "0"], "at least 1"),
            (
                &[
                    "--spec-type",
                    "ngram-simple",
                    "--spec-ngram-simple-size-n",
                    "0",
                ],
                "at least 1",
            ),
            (&["-md", "d.gguf", "--draft-p-min", "2"], "[0, 1]"),
        ] {
            let err = plan(args).unwrap_err().to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
        let err = plan(&["--spec-type", "eagle"]).unwrap_err().to_string();
        assert!(
            err.contains("known: none, draft-simple, ngram-simple"),
            "{err}"
        );
    }
}
