//! Distributed data parallel: one process per device, gradients averaged with torch.distributed's
//! all-reduce (Gloo). The Trainer launches the other processes itself (re-running the program
//! with torchrun's variables), or joins a world that a launcher (torchrun, Slurm, Kubernetes)
//! set up through `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT`.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::TrainerConfig;
use crate::dist::ProcessGroup;
use crate::error::{ConfigError, Error, Result};

/// This process's place in the world, and the workers it launched.
pub(crate) struct Ddp {
    pub(crate) local_rank: usize,
    children: Vec<(usize, Child)>,
    timeout: Duration,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T> {
    value.parse().map_err(|_| {
        ConfigError::invalid("strategy", format!("environment variable {name}={value:?} is not a number")).into()
    })
}

/// Sets up the process group when the configuration asks for several processes; `None` for a
/// single process.
pub(crate) fn setup(config: &TrainerConfig) -> Result<Option<(Ddp, ProcessGroup)>> {
    let processes = config.devices * config.num_nodes;
    if processes <= 1 && !config.strategy.is_ddp() {
        return Ok(None);
    }
    let timeout = Duration::from_secs(config.ddp_timeout_secs.max(1));
    let (rank, world, local_rank, addr, port, children) = match (
        var("RANK"),
        var("WORLD_SIZE"),
        var("MASTER_ADDR"),
        var("MASTER_PORT"),
    ) {
        (Some(rank), Some(world), Some(addr), Some(port)) => {
            let local = var("LOCAL_RANK").unwrap_or_else(|| rank.clone());
            let (rank, world): (usize, usize) = (parse("RANK", &rank)?, parse("WORLD_SIZE", &world)?);
            if world == 0 || rank >= world {
                return Err(ConfigError::invalid(
                    "strategy",
                    format!("environment variables RANK={rank} and WORLD_SIZE={world}: RANK must be below WORLD_SIZE"),
                )
                .into());
            }
            let port: u64 = parse("MASTER_PORT", &port)?;
            let port = u16::try_from(port).ok().filter(|&p| p > 0).ok_or_else(|| {
                ConfigError::invalid(
                    "strategy",
                    format!("environment variable MASTER_PORT={port} is not a port (1 to 65535)"),
                )
            })?;
            (rank, world, parse("LOCAL_RANK", &local)?, addr, port, Vec::new())
        }
        _ if config.num_nodes > 1 => {
            return Err(ConfigError::invalid(
                    "num_nodes",
                    "training on several machines needs RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT on each (torchrun or Slurm set them)",
                )
                .into());
        }
        _ => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| Error::Distributed { operation: "launch", message: format!("no free port: {e}") })?
                .port();
            let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
            let mut children = Vec::new();
            for rank in 1..processes {
                let child = Command::new(&exe)
                    .args(std::env::args_os().skip(1))
                    .env("RANK", rank.to_string())
                    .env("LOCAL_RANK", rank.to_string())
                    .env("WORLD_SIZE", processes.to_string())
                    .env("MASTER_ADDR", "127.0.0.1")
                    .env("MASTER_PORT", port.to_string())
                    .spawn()
                    .map_err(|e| Error::Distributed {
                        operation: "launch",
                        message: format!("could not start rank {rank}: {e}"),
                    })?;
                children.push((rank, child));
            }
            tracing::info!(target: "lit", processes, port, "launched ddp workers");
            (0, processes, 0, "127.0.0.1".to_string(), port, children)
        }
    };
    let join_timeout = Duration::from_secs(config.ddp_join_timeout_secs.max(1));
    let mut pg = ProcessGroup::gloo_with_join_timeout(&addr, port, rank, world, join_timeout, timeout)?;
    if super::config::resolve_device(config.accelerator)?.is_cuda() {
        // CUDA tensors go through NCCL, CPU tensors (lit's own small collectives) through Gloo.
        pg.add_nccl(timeout)?;
    }
    Ok(Some((Ddp { local_rank, children, timeout }, pg)))
}

impl Ddp {
    /// This process's device: on CUDA, the device of its local rank (`cuda:LOCAL_RANK`), as
    /// Lightning's DDP gives each process its own GPU.
    pub(crate) fn device(&self, configured: tch::Device) -> tch::Device {
        match configured {
            tch::Device::Cuda(_) => tch::Device::Cuda(self.local_rank),
            other => other,
        }
    }

    /// After a failure on this rank: how the launched workers ended (waiting up to the timeout).
    pub(crate) fn worker_report(&mut self) -> String {
        let deadline = Instant::now() + self.timeout.min(Duration::from_secs(60));
        let mut report = Vec::new();
        for (rank, child) in &mut self.children {
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                    _ => break None,
                }
            };
            match status {
                Some(s) if s.success() => {}
                Some(s) => report.push(format!("rank {rank} exited with {s}")),
                None => {
                    let _ = child.kill();
                    report.push(format!("rank {rank} did not finish and was stopped"));
                }
            }
        }
        report.join("; ")
    }
}

impl Drop for Ddp {
    fn drop(&mut self) {
        for (rank, child) in &mut self.children {
            match child.wait() {
                Ok(s) if !s.success() => tracing::error!(target: "lit", rank, status = %s, "ddp worker failed"),
                Err(e) => tracing::error!(target: "lit", rank, error = %e, "could not wait for a ddp worker"),
                _ => {}
            }
        }
    }
}
