//! `edgellama serve`: the OpenAI-compatible HTTP server.

use crate::load;
use anyhow::{bail, Context, Result};
use clap::Args;
use edgellama_engine::batch::{Engine, EngineConfig};
use edgellama_server::{router, AppState, ImageSupport, ServerConfig};
use edgellama_tokenizer::ChatTemplate;
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
    /// Requests decoded together, each with its own context.
    #[arg(long = "parallel", default_value_t = 4)]
    pub parallel: usize,
    /// Context size of each parallel sequence, prompt and reply together
    /// (0: the model's training context).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: usize,
    /// Threads (default: one per physical core).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
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
}

pub fn run(a: ServeArgs) -> Result<()> {
    // Validate everything that needs no loading first.
    if a.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    let threads = a.threads.unwrap_or_else(load::default_threads);
    if threads == 0 {
        bail!("-t must be at least 1");
    }
    let addr = format!("{}:{}", a.host, a.port);
    let template_src = match &a.chat_template_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read chat template {}", p.display()))?,
        ),
        None => None,
    };

    if let Some(dir) = &a.allow_image_path {
        if !dir.is_dir() {
            bail!("--allow-image-path {} is not a directory", dir.display());
        }
    }

    let path = a.model.resolve()?;
    let file = load::open_gguf(&path, a.model.load.mode())?;
    let tokenizer = Arc::new(load::tokenizer(&file, &path)?);
    let template = match &template_src {
        Some(src) => ChatTemplate::from_gguf_with_source(&file, src),
        None => ChatTemplate::from_gguf(&file),
    }
    .with_context(|| format!("cannot load the chat template of {}", path.display()))?;
    let model: Arc<dyn edgellama_models::CausalLm> = Arc::from(load::model(&file, &path, threads)?);
    let n_ctx = if a.ctx_size == 0 {
        model.info().n_ctx_train
    } else {
        a.ctx_size
    };
    let config = EngineConfig {
        n_parallel: a.parallel,
        n_ctx,
        max_queue: a.max_queue,
        batch_tokens: a.batch_size,
    };
    let images = match (model.info().image_token, &model.info().preprocess) {
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
    let engine =
        Engine::start(model, tokenizer.clone(), config).context("cannot start the engine")?;
    let model_id = a.alias.clone().unwrap_or_else(|| {
        path.file_name()
            .map_or_else(|| "edgellama".into(), |n| n.to_string_lossy().into_owned())
    });
    let state = Arc::new(AppState::new(
        engine,
        tokenizer,
        Arc::new(template),
        ServerConfig {
            model_id,
            api_key: a.api_key.clone(),
            max_body_bytes: a.max_body,
            images,
        },
    ));
    let app = router(state);
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
            "edgellama serve: {} on http://{local} ({} parallel x {n_ctx} context, {threads} threads)",
            path.display(),
            a.parallel
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
