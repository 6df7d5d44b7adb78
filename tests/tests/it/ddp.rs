//! Distributed data parallel on torch.distributed's Gloo backend, with two processes: the result
//! matches one process with twice the batch, logging and checkpoints happen once, a worker that
//! dies is reported, and a world set up by a launcher (torchrun's variables) is joined.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::temp_dir;

fn demo(mode: &str, dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ddp_demo"));
    c.args([mode, dir.to_str().unwrap()]);
    for var in ["RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"] {
        c.env_remove(var);
    }
    c
}

fn report(dir: &Path, rank: usize) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(format!("weights-{rank}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn weights(dir: &Path, rank: usize) -> (Vec<f64>, u64) {
    let v = report(dir, rank);
    let w = v["weights"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    (w, v["global_step"].as_u64().unwrap())
}

fn assert_close(a: &[f64], b: &[f64], what: &str) {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    assert!(diff / norm <= 1e-6, "{what}: relative difference {}", diff / norm);
}

/// `ddp_demo MODE DIR OPTIONS…`.
fn demo_with(mode: &str, dir: &Path, options: &[&str]) -> Command {
    let mut c = demo(mode, dir);
    c.args(options);
    c
}

fn run(mut c: Command) -> std::process::Output {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn two_processes_match_one_with_twice_the_batch() {
    let (single, ddp) = (temp_dir("ddp-single"), temp_dir("ddp-two"));
    run(demo("single", &single));
    run(demo("ddp", &ddp));
    let (one, one_steps) = weights(&single, 0);
    let (rank0, steps0) = weights(&ddp, 0);
    let (rank1, steps1) = weights(&ddp, 1);
    assert_eq!((one_steps, steps0, steps1), (8, 8, 8));
    assert_eq!(rank0, rank1, "both processes hold the same weights");
    assert_close(&rank0, &one, "ddp against one process");
    // As Lightning's data connector: only local rank 0 runs `prepare_data` (once per entry
    // point: fit, test, predict), and every process's `setup` comes after it has finished.
    let prepared = std::fs::read_to_string(ddp.join("prepared")).unwrap();
    assert_eq!(prepared, "0\n0\n0\n");
    for rank in [0, 1] {
        let seen: Vec<String> = serde_json::from_value(report(&ddp, rank)["prepared_at_setup"].clone()).unwrap();
        assert_eq!(seen, ["0\n", "0\n0\n", "0\n0\n0\n"], "rank {rank}'s setups");
    }
    // `cx.all_gather` (Lightning's `self.all_gather`): every rank's tensor, in rank order; on one
    // process the tensor itself.
    for rank in [0, 1] {
        assert_eq!(report(&ddp, rank)["gathered"], serde_json::json!([0.0, 10.0]), "rank {rank}");
    }
    assert_eq!(report(&single, 0)["gathered"], serde_json::json!([0.0]));
    // sync_dist: the epoch mean over both processes equals the single process's.
    let (r0, r1, one) = (report(&ddp, 0), report(&ddp, 1), report(&single, 0));
    assert_eq!(r0["rank_mean"], 0.5, "the mean of ranks 0 and 1");
    assert_eq!(r1["rank_mean"], 0.5);
    let (l0, l1, l) =
        (r0["epoch_loss"].as_f64().unwrap(), r1["epoch_loss"].as_f64().unwrap(), one["epoch_loss"].as_f64().unwrap());
    assert_eq!(l0, l1);
    assert!((l0 - l).abs() <= 1e-5 * l.abs(), "synced epoch loss {l0}, one process {l}");
    assert_eq!(one["rank_mean"], 0.0);
    // Logging and checkpointing happened once, on rank 0.
    let versions: Vec<_> = std::fs::read_dir(ddp.join("lightning_logs")).unwrap().collect();
    assert_eq!(versions.len(), 1, "one logger run directory");
    let checkpoints: Vec<_> = std::fs::read_dir(ddp.join("lightning_logs/version_0/checkpoints")).unwrap().collect();
    assert_eq!(checkpoints.len(), 1);
    // Every rank names rank 0's best checkpoint, and tests from it ("best") to one synced loss.
    let best = r0["best_model_path"].as_str().expect("rank 0 has a best checkpoint");
    assert_eq!(r1["best_model_path"], r0["best_model_path"], "rank 1 names rank 0's file");
    assert!(Path::new(best).starts_with(ddp.join("lightning_logs/version_0/checkpoints")), "{best}");
    assert!(Path::new(best).exists(), "{best}");
    assert_eq!(r0["test_loss"], r1["test_loss"]);
    assert!(r0["test_loss"].as_f64().is_some_and(f64::is_finite), "{}", r0["test_loss"]);
    // Test and predict data are sharded as `DistributedSampler` shards them (Lightning's
    // `test_distributed_sampler_args`): each rank tests and predicts half of the 32 samples,
    // rank r taking samples r, r + 2, ….
    assert_eq!(
        (one["test_samples"].as_i64(), r0["test_samples"].as_i64(), r1["test_samples"].as_i64()),
        (Some(32), Some(16), Some(16))
    );
    let predicted = |r: &serde_json::Value| -> Vec<i64> { serde_json::from_value(r["predicted"].clone()).unwrap() };
    assert_eq!(predicted(&one), (0..32).collect::<Vec<_>>());
    assert_eq!(predicted(&r0), (0..32).step_by(2).collect::<Vec<_>>());
    assert_eq!(predicted(&r1), (1..32).step_by(2).collect::<Vec<_>>());
}

/// Gradients are averaged once per accumulation window, as DDP's `no_sync` has Lightning do
/// (`_block_parallel_sync_behavior`): two processes accumulating 2 batches of 4 take the steps of
/// one process accumulating 2 batches of 8.
#[test]
fn accumulated_gradients_are_reduced_once_per_window() {
    let (single, ddp) = (temp_dir("ddp-acc-single"), temp_dir("ddp-acc-two"));
    run(demo_with("single", &single, &["acc"]));
    run(demo_with("ddp", &ddp, &["acc"]));
    let (one, one_steps) = weights(&single, 0);
    let (rank0, steps0) = weights(&ddp, 0);
    assert_eq!((one_steps, steps0), (4, 4), "2 epochs of 4 batches, a step every 2");
    assert_eq!(rank0, weights(&ddp, 1).0);
    assert_close(&rank0, &one, "ddp with accumulation against one process");
}

/// `gradient_as_bucket_view` with buckets of about 100 bytes (an all-reduce per parameter,
/// started while backward goes on) gives one process's result.
#[test]
fn gradients_as_bucket_views_in_small_buckets_match_one_process() {
    let (single, ddp) = (temp_dir("ddp-view-single"), temp_dir("ddp-view-two"));
    run(demo("single", &single));
    run(demo_with("ddp", &ddp, &["view"]));
    let (rank0, rank1) = (weights(&ddp, 0).0, weights(&ddp, 1).0);
    assert_eq!(rank0, rank1);
    assert_close(&rank0, &weights(&single, 0).0, "bucket views against one process");
}

/// A parameter that takes no part in a step (layer `l3`, skipped in odd steps) fails the next
/// step without `find_unused_parameters`, naming the parameter and the option (PyTorch DDP's
/// error, which Lightning's `ddp_find_unused_parameters_true` answers); with it, the run gives
/// one process's result.
#[test]
fn an_unused_parameter_is_named_and_find_unused_parameters_handles_it() {
    let dir = temp_dir("ddp-unused");
    let out = demo_with("ddp", &dir, &["unused"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("l3.weight") && stderr.contains("l3.bias"), "{stderr}");
    assert!(stderr.contains("ddp_find_unused_parameters"), "{stderr}");

    let (single, ddp) = (temp_dir("ddp-unused-single"), temp_dir("ddp-unused-find"));
    run(demo_with("single", &single, &["unused"]));
    run(demo_with("ddp", &ddp, &["unused", "find"]));
    let (rank0, rank1) = (weights(&ddp, 0).0, weights(&ddp, 1).0);
    assert_eq!(rank0, rank1);
    assert_close(&rank0, &weights(&single, 0).0, "find_unused_parameters against one process");
}

/// In manual optimization `cx.manual_backward` averages the gradients across the processes
/// (Lightning's `DDPStrategy.pre_backward` prepares DDP's reducer there).
#[test]
fn manual_optimization_averages_gradients_across_processes() {
    let (single, ddp) = (temp_dir("ddp-manual-single"), temp_dir("ddp-manual-two"));
    run(demo_with("single", &single, &["manual"]));
    run(demo_with("ddp", &ddp, &["manual"]));
    let (one, one_steps) = weights(&single, 0);
    let (rank0, steps0) = weights(&ddp, 0);
    assert_eq!((one_steps, steps0), (8, 8));
    assert_eq!(rank0, weights(&ddp, 1).0);
    assert_close(&rank0, &one, "manual optimization under ddp against one process");
}

/// Buffers (a batch norm's running statistics) follow rank 0's before forward passes, as DDP's
/// `broadcast_buffers=True` (Lightning's default) has them: each rank trains on other samples,
/// yet both validate with rank 0's statistics.
#[test]
fn buffers_follow_rank_0_in_validation() {
    let dir = temp_dir("ddp-bn");
    run(demo_with("ddp", &dir, &["bn"]));
    let means =
        |rank| -> Vec<Vec<f64>> { serde_json::from_value(report(&dir, rank)["val_running_means"].clone()).unwrap() };
    let (rank0, rank1) = (means(0), means(1));
    assert_eq!(rank0.len(), 2, "one validation per epoch");
    assert!(rank0[0].iter().any(|m| *m != 0.0), "the statistics moved: {rank0:?}");
    assert_eq!(rank0, rank1);
}

/// DDP on CUDA goes through NCCL (a world of one process here, as a machine with one GPU allows),
/// and gives the CPU's result; without a CUDA device, asking for it is an error that says so.
/// Skipped without a CUDA device unless `LIT_TEST_CUDA=1` demands one.
#[test]
fn ddp_on_cuda_goes_through_nccl() {
    let dir = temp_dir("ddp-cuda");
    if !lit::tch::Cuda::is_available() {
        assert!(std::env::var("LIT_TEST_CUDA").is_err(), "LIT_TEST_CUDA is set but libtorch finds no CUDA device");
        let out = demo_with("ddp1", &dir, &["cuda"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("accelerator") && stderr.contains("no CUDA device"), "{stderr}");
        return;
    }
    assert!(lit::dist::ProcessGroup::nccl_available(), "this build of lit has no NCCL");
    let single = temp_dir("ddp-cuda-single");
    run(demo("single", &single));
    run(demo_with("ddp1", &dir, &["cuda"]));
    let diff: f64 =
        weights(&dir, 0).0.iter().zip(&weights(&single, 0).0).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(diff < 1e-4, "NCCL on CUDA against the CPU: largest difference {diff}");
}

#[test]
fn a_dead_worker_is_reported_not_waited_for() {
    let dir = temp_dir("ddp-crash");
    let start = Instant::now();
    let out = demo("crash", &dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("rank 1 exited with exit status: 3"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(30), "took {:?}", start.elapsed());
}

#[test]
fn a_world_from_launcher_variables_is_joined() {
    let (single, joined) = (temp_dir("ddp-ref"), temp_dir("ddp-joined"));
    run(demo("single", &single));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let children: Vec<_> = (0..2)
        .map(|rank| {
            let mut c = demo("ddp", &joined);
            c.env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string());
            c.spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
    }
    assert_close(&weights(&joined, 1).0, &weights(&single, 0).0, "joined world against one process");
}

/// Ctrl-C in a terminal reaches every process of the run: all stop at the same step (they agree
/// through the gradient all-reduce), rank 0 writes `interrupted.ckpt`, and every rank returns
/// `Error::Interrupted` (not a distributed error from a peer that left).
#[cfg(unix)]
#[test]
fn ctrl_c_under_ddp_interrupts_every_rank() {
    use std::os::unix::process::CommandExt;
    let dir = temp_dir("ddp-interrupt");
    let mut command = demo("interrupt", &dir);
    command.process_group(0).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let checkpoints = dir.join("lightning_logs/version_0/checkpoints");
    let start = Instant::now();
    while std::fs::read_dir(&checkpoints).map_or(true, |d| d.count() == 0) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(start.elapsed() < Duration::from_secs(60), "no checkpoint after 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The whole process group, as a terminal's Ctrl-C.
    let status = Command::new("kill").args(["-s", "INT", "--", &format!("-{}", child.id())]).status().unwrap();
    assert!(status.success());
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(60), "the run did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("training interrupted; resume from").count(), 2, "both ranks: {stderr}");
    assert!(!stderr.contains("distributed"), "{stderr}");
    assert!(checkpoints.join("interrupted.ckpt").exists(), "{stderr}");
}
