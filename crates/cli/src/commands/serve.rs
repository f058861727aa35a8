//! `edgellama serve`: the OpenAI-compatible HTTP server.

use crate::commands::chat::load_template;
use crate::{load, spec};
use anyhow::{bail, Context, Result};
use clap::Args;
use edgellama_engine::batch::{Engine, EngineConfig};
use edgellama_engine::guard::Guard;
use edgellama_server::{router, AppState, ImageSupport, ServedModel, ServerConfig, ShieldSettings};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: load::ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests decoded together (-np), drawing on one KV cache.
    #[arg(long = "parallel", visible_alias = "np", default_value_t = 4)]
    pub parallel: usize,
    /// Positions of the KV cache shared by the parallel sequences, prompts
    /// and replies of all of them together, as llama-server's -c (0: the
    /// model's training context). Memory is taken as sequences grow.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    pub ctx_size: usize,
    /// Let one sequence fill the whole cache; without it each holds at most
    /// -c / --parallel positions, as llama-server's slots do.
    #[arg(long = "kv-unified")]
    pub kv_unified: bool,
    #[command(flatten)]
    pub threads: load::ThreadsArgs,
    #[command(flatten)]
    pub kv: load::KvArgs,
    /// Require `Authorization: Bearer KEY` on the API (not on / and /health).
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// Requests that may wait for a free sequence; more get 503 and Retry-After.
    #[arg(long = "max-queue", default_value_t = 64)]
    pub max_queue: usize,
    /// Tokens per forward step (decoding tokens and prompt chunks together).
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    /// Largest request body in bytes.
    #[arg(long = "max-body", default_value_t = 4 << 20)]
    pub max_body: usize,
    /// Model name to report (default: the file's name).
    #[arg(long = "alias")]
    pub alias: Option<String>,
    /// Use this Jinja chat template instead of the model's.
    #[arg(long = "chat-template-file")]
    pub chat_template_file: Option<PathBuf>,
    /// Let image parts name local files under DIR (by path or file://);
    /// without it only data: URLs are accepted.
    #[arg(long = "allow-image-path", value_name = "DIR")]
    pub allow_image_path: Option<PathBuf>,
    /// Fetch http(s) image URLs in image parts (off: only data: URLs and
    /// allowed local files are accepted).
    #[arg(long = "allow-image-urls")]
    pub allow_image_urls: bool,
    #[command(flatten)]
    pub guard: GuardServeArgs,
    #[command(flatten)]
    pub spec: spec::SpecArgs,
    /// Speculative decoding: drafts are added to a step only while its
    /// decoding rows, drafts included, stay within this (many sequences
    /// decoding together leave no room: the step is bound by arithmetic)
    #[arg(long = "spec-max-rows", default_value_t = edgellama_engine::batch::SPEC_MAX_ROWS)]
    pub spec_max_rows: usize,
}

/// The guard model served beside the main one.
#[derive(Args, Debug)]
pub struct GuardServeArgs {
    /// A Llama Guard model (GGUF) served beside the main one: listed in
    /// /v1/models, answering /v1/moderations, shielding chats as --guard says.
    #[arg(long = "guard-model", value_name = "FILE")]
    pub guard_model: Option<PathBuf>,
    /// Which chat turns the guard checks: `input` (the prompt, before any
    /// generation), `output` (the reply, held back until checked), `both`,
    /// or `none` (only /v1/moderations).
    #[arg(long = "guard", value_enum, default_value = "none")]
    pub guard: GuardMode,
    /// A turn is flagged from this probability of "unsafe" on.
    #[arg(long = "guard-threshold", default_value_t = 0.5)]
    pub guard_threshold: f32,
    /// The assistant's reply when the input shield blocks a request.
    #[arg(long = "guard-refusal")]
    pub guard_refusal: Option<String>,
    /// Category codes left out of the guard's policy (comma-separated: S6,S8).
    #[arg(long = "guard-exclude", value_delimiter = ',')]
    pub guard_exclude: Vec<String>,
    /// Reply bytes the output shield checks at a time.
    #[arg(long = "guard-output-chunk", default_value_t = 200)]
    pub guard_output_chunk: usize,
    /// Guard checks run together.
    #[arg(long = "guard-parallel", default_value_t = 2)]
    pub guard_parallel: usize,
    /// Context of each guard sequence (its prompt holds the conversation).
    #[arg(long = "guard-ctx-size", default_value_t = 8192)]
    pub guard_ctx_size: usize,
    /// Use this Jinja chat template for the guard instead of its file's.
    #[arg(long = "guard-chat-template-file")]
    pub guard_chat_template_file: Option<PathBuf>,
    /// Name of the guard model (default: its file's name).
    #[arg(long = "guard-alias")]
    pub guard_alias: Option<String>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardMode {
    None,
    Input,
    Output,
    Both,
}

impl GuardServeArgs {
    /// Checks what needs no loading.
    fn validate(&self) -> Result<()> {
        if self.guard_model.is_none() {
            if self.guard != GuardMode::None {
                bail!("--guard needs a guard model (--guard-model FILE)");
            }
            return Ok(());
        }
        if !(0.0..=1.0).contains(&self.guard_threshold) {
            bail!(
                "--guard-threshold must be within [0, 1], got {}",
                self.guard_threshold
            );
        }
        if self.guard_parallel == 0 {
            bail!("--guard-parallel must be at least 1");
        }
        if self.guard_ctx_size < 64 {
            bail!(
                "--guard-ctx-size must be at least 64, got {}",
                self.guard_ctx_size
            );
        }
        if self.guard_output_chunk == 0 {
            bail!("--guard-output-chunk must be at least 1");
        }
        Ok(())
    }

    fn settings(&self) -> ShieldSettings {
        let mut s = ShieldSettings {
            input: matches!(self.guard, GuardMode::Input | GuardMode::Both),
            output: matches!(self.guard, GuardMode::Output | GuardMode::Both),
            threshold: self.guard_threshold,
            excluded: self
                .guard_exclude
                .iter()
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect(),
            output_chunk: self.guard_output_chunk,
            ..ShieldSettings::default()
        };
        if let Some(r) = &self.guard_refusal {
            s.refusal = r.clone();
        }
        s
    }
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map_or_else(|| "edgellama".into(), |n| n.to_string_lossy().into_owned())
}

fn read_template(path: Option<&std::path::Path>) -> Result<Option<String>> {
    path.map(|p| {
        std::fs::read_to_string(p)
            .with_context(|| format!("cannot read chat template {}", p.display()))
    })
    .transpose()
}

/// How a served model's engine is sized: its KV pool's positions from the
/// model's training context, its sequences, and its cache types.
struct Sizing<'p, F> {
    n_ctx: F,
    n_parallel: usize,
    cache: load::KvArgs,
    /// Speculative decoding for this model's sequences.
    spec: Option<&'p spec::SpecPlan>,
}

/// A model file made ready to serve, the main model and the guard alike:
/// its tokenizer and template (`template_src` replacing the file's), the
/// model on the shared backend, its engine of `n_parallel` sequences of
/// `n_ctx(training context)` positions, and what it needs for images.
fn load_served(
    a: &ServeArgs,
    path: &std::path::Path,
    template_src: Option<&str>,
    backend: &Arc<edgellama_backend::CpuBackend>,
    alias: Option<String>,
    sizing: Sizing<'_, impl Fn(usize) -> usize>,
) -> Result<ServedModel> {
    let Sizing {
        n_ctx,
        n_parallel,
        cache,
        spec: spec_plan,
    } = sizing;
    let file = load::open_gguf(path, a.model.load.mode())?;
    let tokenizer = Arc::new(load::tokenizer(&file, path)?);
    let template = load_template(&file, path, template_src)?;
    let model: Arc<dyn edgellama_models::CausalLm> =
        Arc::from(load::model_on(&file, path, backend.clone())?);
    let info = model.info();
    let images = match (info.image_token, &info.preprocess) {
        (Some(token), Some(preprocess)) => Some(ImageSupport {
            token,
            token_text: tokenizer.decode(&[token], true),
            preprocess: preprocess.clone(),
            limits: Default::default(),
            allow_dir: a.allow_image_path.clone(),
            allow_urls: a.allow_image_urls,
        }),
        _ => None,
    };
    let spec = match spec_plan {
        Some(plan) => {
            let draft =
                a.spec
                    .draft_model(plan, &tokenizer, backend, a.model.hf_token.as_deref())?;
            if let Some((path, _)) = &draft {
                eprintln!("edgellama serve: draft model {}", path.display());
            }
            Some(a.spec.config(plan, draft.map(|d| d.1), a.spec_max_rows))
        }
        None => None,
    };
    let config = EngineConfig {
        spec,
        n_parallel,
        n_ctx: n_ctx(info.n_ctx_train),
        kv_unified: a.kv_unified,
        type_k: cache.type_k,
        type_v: cache.type_v,
        n_ctx_train: info.n_ctx_train,
        max_queue: a.max_queue,
        batch_tokens: a.batch_size,
        ..EngineConfig::default()
    };
    let engine = Engine::start(model, tokenizer.clone(), config)
        .with_context(|| format!("cannot start the engine of {}", path.display()))?;
    Ok(ServedModel {
        id: alias.unwrap_or_else(|| file_name(path)),
        engine,
        tokenizer,
        template: Arc::new(template),
        images,
    })
}

pub fn run(a: ServeArgs) -> Result<()> {
    // Validate everything that needs no loading first.
    if a.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    let threads = a.threads.resolve()?;
    let addr = format!("{}:{}", a.host, a.port);
    let template_src = read_template(a.chat_template_file.as_deref())?;
    a.guard.validate()?;
    let spec_plan = a.spec.plan()?;
    if spec_plan.is_some() && a.spec_max_rows < 2 {
        bail!("--spec-max-rows must be at least 2 (a decoding token and a draft)");
    }
    let guard_template_src = read_template(a.guard.guard_chat_template_file.as_deref())?;
    if let Some(dir) = &a.allow_image_path {
        if !dir.is_dir() {
            bail!("--allow-image-path {} is not a directory", dir.display());
        }
    }

    let path = a.model.resolve()?;
    let backend = load::backend(threads)?;
    let main = load_served(
        &a,
        &path,
        template_src.as_deref(),
        &backend,
        a.alias.clone(),
        Sizing {
            n_ctx: |train: usize| if a.ctx_size == 0 { train } else { a.ctx_size },
            n_parallel: a.parallel,
            cache: a.kv,
            spec: spec_plan.as_ref(),
        },
    )?;
    let cfg = main.engine.config().clone();
    let state = AppState::new(
        main.engine,
        main.tokenizer,
        main.template,
        ServerConfig {
            model_id: main.id,
            api_key: a.api_key.clone(),
            max_body_bytes: a.max_body,
            images: main.images,
        },
    );
    let state = match &a.guard.guard_model {
        None => state,
        Some(gpath) => {
            let g = &a.guard;
            let served = load_served(
                &a,
                gpath,
                guard_template_src.as_deref(),
                &backend,
                g.guard_alias.clone(),
                Sizing {
                    n_ctx: |train: usize| g.guard_ctx_size.min(train.max(64)) * g.guard_parallel,
                    n_parallel: g.guard_parallel,
                    // The guard's verdicts are scored with the cache they
                    // were measured with.
                    cache: load::KvArgs::default(),
                    spec: None,
                },
            )?;
            let guard = Guard::new(
                served.engine.clone(),
                served.tokenizer.clone(),
                served.template.clone(),
            )
            .with_context(|| format!("{} cannot be used as a guard", gpath.display()))?;
            if served.id == state.main().id {
                bail!(
                    "the guard model and the main model have the same name `{}`: give one an alias",
                    served.id
                );
            }
            eprintln!(
                "edgellama serve: guard {} as `{}` (shields: {:?}, threshold {})",
                gpath.display(),
                served.id,
                g.guard,
                g.guard_threshold
            );
            state.with_guard(served, guard, g.settings())
        }
    };
    let app = router(Arc::new(state));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr().context("no local address")?;
        eprintln!(
            "edgellama serve: {} on http://{local} ({} parallel, KV cache of {} positions ({}/{}), up to {} per sequence, {threads} threads)",
            path.display(),
            cfg.n_parallel,
            cfg.n_ctx,
            cfg.type_k,
            cfg.type_v,
            cfg.n_ctx_seq(),
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(listener, app).with_graceful_shutdown(async {
            stop_signal().await;
            let _ = stop_tx.send(());
        });
        // Streams still open after Ctrl-C get a few seconds to finish, then
        // the server stops without them.
        let deadline = async {
            if stop_rx.await.is_ok() {
                tokio::time::sleep(std::time::Duration::from_secs(SHUTDOWN_GRACE_SECS)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = server => r.context("the server stopped"),
            _ = deadline => {
                eprintln!("edgellama serve: stopped with requests still open");
                Ok(())
            }
        }
    })
}

const SHUTDOWN_GRACE_SECS: u64 = 5;

/// Ctrl-C, or SIGTERM where there is one (as service managers send).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
