//! Datasets and loaders: order, seeded shuffling, drop_last, collate, workers, errors.

use std::collections::BTreeSet;

use lit::data::{DataLoader, Dataset, Loader, Subset, TensorDataset, random_split, random_split_fractions};
use lit::prelude::*;
use lit::{DataError, Error};

fn numbers(n: i64) -> TensorDataset<Tensor> {
    TensorDataset::new(Tensor::arange(n, (Kind::Int64, Device::Cpu))).unwrap()
}

/// `numbers(n)` read sample by sample (no one-read gather), so that its loader's workers work.
struct Rows(TensorDataset<Tensor>);

impl Dataset for Rows {
    type Item = Tensor;
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, index: usize) -> lit::Result<Tensor> {
        self.0.get(index)
    }
}

fn rows(n: i64) -> Rows {
    Rows(numbers(n))
}

fn epoch<L: Loader<Batch = Tensor>>(loader: &mut L, epoch: usize) -> Vec<Vec<i64>> {
    loader.iter(epoch).unwrap().map(|b| Vec::<i64>::try_from(b.unwrap()).unwrap()).collect()
}

#[test]
fn batches_come_in_order_with_a_short_last_batch() {
    let mut loader = DataLoader::new(numbers(10)).batch_size(3);
    assert_eq!(loader.len(), Some(4));
    assert_eq!(epoch(&mut loader, 0), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8], vec![9]]);
}

#[test]
fn drop_last_drops_the_short_batch() {
    let mut loader = DataLoader::new(numbers(10)).batch_size(3).drop_last(true);
    assert_eq!(loader.len(), Some(3));
    assert_eq!(epoch(&mut loader, 0), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8]]);
}

#[test]
fn shuffling_is_seeded_and_new_each_epoch() {
    let mut a = DataLoader::new(numbers(50)).batch_size(7).shuffle(true).seed(3);
    let mut b = DataLoader::new(numbers(50)).batch_size(7).shuffle(true).seed(3);
    let mut c = DataLoader::new(numbers(50)).batch_size(7).shuffle(true).seed(4);
    let (a0, a1) = (epoch(&mut a, 0), epoch(&mut a, 1));
    assert_eq!(a0, epoch(&mut b, 0), "same seed, same epoch: same order");
    assert_ne!(a0, a1, "a new order every epoch");
    assert_ne!(a0, epoch(&mut c, 0), "another seed, another order");
    let seen: BTreeSet<i64> = a0.iter().flatten().copied().collect();
    assert_eq!(seen, (0..50).collect(), "every sample exactly once per epoch");
    assert_eq!(a0.iter().flatten().count(), 50);
    assert_ne!(a0.concat(), (0..50).collect::<Vec<_>>(), "shuffled");
}

#[test]
fn workers_deliver_the_same_batches_in_the_same_order() {
    let mut serial = DataLoader::new(numbers(103)).batch_size(8).shuffle(true).seed(9);
    let mut parallel = DataLoader::new(rows(103)).batch_size(8).shuffle(true).seed(9).num_workers(3).prefetch_factor(2);
    for e in 0..3 {
        assert_eq!(epoch(&mut serial, e), epoch(&mut parallel, e), "epoch {e}");
    }
}

#[test]
fn collate_builds_custom_batches() {
    struct Words;
    impl Dataset for Words {
        type Item = (String, i64);
        fn len(&self) -> usize {
            5
        }
        fn get(&self, i: usize) -> lit::Result<(String, i64)> {
            Ok((format!("w{i}"), i as i64 * 10))
        }
    }
    let mut loader = DataLoader::with_collate(Words, |items: Vec<(String, i64)>| {
        let (words, values): (Vec<String>, Vec<i64>) = items.into_iter().unzip();
        Ok((words, Tensor::from_slice(&values)))
    })
    .batch_size(2)
    .num_workers(2);
    let batches: Vec<(Vec<String>, Tensor)> = loader.iter(0).unwrap().map(Result::unwrap).collect();
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[1].0, ["w2", "w3"]);
    assert_eq!(Vec::<i64>::try_from(&batches[2].1).unwrap(), [40]);
}

/// A dataset that fails (or panics) at one index.
struct Faulty {
    bad: usize,
    panic: bool,
}

impl Dataset for Faulty {
    type Item = Tensor;
    fn len(&self) -> usize {
        20
    }
    fn get(&self, i: usize) -> lit::Result<Tensor> {
        if i == self.bad {
            if self.panic {
                panic!("sample {i} is unreadable");
            }
            return Err(Error::msg(format!("sample {i} is missing")));
        }
        Ok(Tensor::from(i as f32))
    }
}

fn first_error(loader: &mut impl Loader<Batch = Tensor>) -> (usize, Error) {
    let mut ok = 0;
    for batch in loader.iter(0).unwrap() {
        match batch {
            Ok(_) => ok += 1,
            Err(e) => return (ok, e),
        }
    }
    panic!("the faulty sample produced no error");
}

#[test]
fn a_failing_dataset_ends_the_epoch_with_its_error() {
    for workers in [0, 2] {
        let mut loader = DataLoader::new(Faulty { bad: 9, panic: false }).batch_size(4).num_workers(workers);
        let (ok, e) = first_error(&mut loader);
        assert_eq!(ok, 2, "batches before the faulty one arrive ({workers} workers)");
        assert!(e.to_string().contains("sample 9 is missing"), "{e}");
    }
}

#[test]
fn a_panicking_dataset_is_an_error_not_a_crash_or_a_hang() {
    for workers in [0, 3] {
        let mut loader = DataLoader::new(Faulty { bad: 13, panic: true }).batch_size(4).num_workers(workers);
        let (ok, e) = first_error(&mut loader);
        assert_eq!(ok, 3);
        match &e {
            Error::Data(DataError::Panicked { batch: 3, message, .. }) => {
                assert!(message.contains("sample 13 is unreadable"), "{message}")
            }
            other => panic!("expected a panic error for batch 3, got {other:?}"),
        }
        let text = e.to_string();
        assert!(text.contains("panicked while loading batch 3"), "{text}");
    }
}

#[test]
fn an_iterator_dropped_early_stops_its_workers() {
    let mut loader = DataLoader::new(rows(1000)).batch_size(1).num_workers(4).prefetch_factor(1);
    let first: Vec<Tensor> = loader.iter(0).unwrap().take(3).map(Result::unwrap).collect();
    assert_eq!(first.len(), 3);
    // Dropping the iterator joined the workers; the next epoch starts cleanly.
    assert_eq!(loader.iter(1).unwrap().count(), 1000);
}

/// The ids of this process's threads named `lit-loader-*` (the loaders' workers).
fn loader_threads() -> BTreeSet<u32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            comm.starts_with("lit-loader").then(|| entry.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

/// Workers live across epochs (Lightning's `persistent_workers=True`): the second epoch, and
/// one cut short, are served by the threads the first started; with `persistent_workers(false)`
/// each epoch's threads are gone at its end.
#[test]
fn workers_persist_across_epochs() {
    crate::common::run_in_own_process("data::workers_persist_across_epochs_child");
}

#[test]
#[ignore = "run by workers_persist_across_epochs in a process of its own"]
fn workers_persist_across_epochs_child() {
    assert!(loader_threads().is_empty());
    // A tensor dataset gathers a batch in one read: nothing for workers to overlap, so its
    // batches are read in this thread whatever `num_workers` says.
    let mut at_once = DataLoader::new(numbers(100)).batch_size(8).shuffle(true).num_workers(2);
    let reference = epoch(&mut DataLoader::new(numbers(100)).batch_size(8).shuffle(true), 0);
    assert_eq!(epoch(&mut at_once, 0), reference);
    assert!(loader_threads().is_empty(), "no workers for one-read batches");

    let mut loader = DataLoader::new(rows(100)).batch_size(8).num_workers(2);
    assert_eq!(epoch(&mut loader, 0).len(), 13);
    let first = loader_threads();
    assert_eq!(first.len(), 2, "two workers after the first epoch");
    let cut_short: Vec<Tensor> = loader.iter(1).unwrap().take(2).map(Result::unwrap).collect();
    assert_eq!(cut_short.len(), 2);
    assert_eq!(epoch(&mut loader, 2), epoch(&mut DataLoader::new(numbers(100)).batch_size(8), 2));
    assert_eq!(loader_threads(), first, "later epochs start no new threads");
    drop(loader);
    assert!(loader_threads().is_empty(), "dropping the loader stops its workers");

    let mut loader = DataLoader::new(rows(100)).batch_size(8).num_workers(2).persistent_workers(false);
    let during: Vec<BTreeSet<u32>> = loader.iter(0).unwrap().map(|_| loader_threads()).collect();
    // From the second batch on both workers have delivered (and so carry their names: a thread
    // names itself when it starts).
    assert!(during[1..].iter().all(|t| t.len() == 2), "{during:?}");
    assert!(loader_threads().is_empty(), "without persistent workers the epoch's threads end with it");
}

/// A worker's tensor work runs on the worker alone: a parallel operation in `collate` sees one
/// intra-op thread there, while the training thread keeps its own number.
#[test]
fn workers_run_their_tensor_work_single_threaded() {
    crate::common::run_in_own_process("data::workers_run_their_tensor_work_single_threaded_child");
}

#[test]
#[ignore = "run by workers_run_their_tensor_work_single_threaded in a process of its own"]
fn workers_run_their_tensor_work_single_threaded_child() {
    lit::tch::set_num_threads(2);
    let mut loader = DataLoader::with_collate(numbers(16), |items: Vec<Tensor>| {
        let stacked = Tensor::stack(&items, 0);
        Ok(Tensor::from_slice(&[lit::tch::get_num_threads() as i64, stacked.size()[0]]))
    })
    .batch_size(4)
    .num_workers(2);
    let seen: Vec<Vec<i64>> = loader.iter(0).unwrap().map(|b| Vec::try_from(b.unwrap()).unwrap()).collect();
    assert_eq!(seen, vec![vec![1, 4]; 4], "intra-op threads in the workers, samples per batch");
    assert_eq!(lit::tch::get_num_threads(), 2, "the training thread keeps its threads");
}

#[test]
fn random_split_is_disjoint_complete_and_seeded() {
    let parts = random_split(numbers(100), &[70, 20, 10], 5).unwrap();
    let sizes: Vec<usize> = parts.iter().map(Subset::len).collect();
    assert_eq!(sizes, [70, 20, 10]);
    let all: BTreeSet<usize> = parts.iter().flat_map(|p| p.indices().to_vec()).collect();
    assert_eq!(all.len(), 100);
    let again = random_split(numbers(100), &[70, 20, 10], 5).unwrap();
    assert_eq!(parts[1].indices(), again[1].indices());
    let other = random_split(numbers(100), &[70, 20, 10], 6).unwrap();
    assert_ne!(parts[1].indices(), other[1].indices());
    // Items of a subset are the dataset's items at its indices.
    let i = parts[2].indices()[0];
    assert_eq!(parts[2].get(0).unwrap().int64_value(&[]), i as i64);

    let fractions = random_split_fractions(numbers(10), &[0.55, 0.45], 0).unwrap();
    assert_eq!(fractions.iter().map(Subset::len).collect::<Vec<_>>(), [6, 4]);
}

#[test]
fn bad_splits_and_indices_are_errors() {
    let e = random_split(numbers(10), &[5, 4], 0).err().unwrap().to_string();
    assert!(e.contains("add up to 9") && e.contains("10 samples"), "{e}");
    let e = random_split_fractions(numbers(10), &[0.5, 0.6], 0).err().unwrap().to_string();
    assert!(e.contains("add up to 1"), "{e}");
    let e = numbers(3).get(3).err().unwrap().to_string();
    assert!(e.contains("index 3 is out of range for a dataset of length 3"), "{e}");
    let e = TensorDataset::new((
        Tensor::zeros([3, 2], (Kind::Float, Device::Cpu)),
        Tensor::zeros([4], (Kind::Int64, Device::Cpu)),
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("different numbers of rows"), "{e}");
}

#[test]
fn tensor_datasets_gather_tuples() {
    let x = Tensor::arange(12, (Kind::Float, Device::Cpu)).view([6, 2]);
    let y = Tensor::arange(6, (Kind::Int64, Device::Cpu));
    let mut loader = DataLoader::new(TensorDataset::new((x, y)).unwrap()).batch_size(4);
    let batches: Vec<(Tensor, Tensor)> = loader.iter(0).unwrap().map(Result::unwrap).collect();
    assert_eq!(batches[0].0.size(), [4, 2]);
    assert_eq!(Vec::<i64>::try_from(&batches[1].1).unwrap(), [4, 5]);
    assert_eq!(Vec::<f32>::try_from(&batches[1].0.flatten(0, -1)).unwrap(), [8.0, 9.0, 10.0, 11.0]);
}

#[test]
fn distributed_shards_are_disjoint_complete_and_even() {
    // 10 samples over 3 processes: padded to 12 by repeating the start, 4 samples each.
    let shards: Vec<Vec<i64>> = (0..3)
        .map(|rank| {
            let mut loader = DataLoader::new(numbers(10)).batch_size(2).shuffle(true).seed(4);
            loader.shard(rank, 3);
            assert_eq!(loader.len(), Some(2), "every rank gets the same number of batches");
            epoch(&mut loader, 1).concat()
        })
        .collect();
    assert!(shards.iter().all(|s| s.len() == 4));
    let all: Vec<i64> = shards.concat();
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(distinct, (0..10).collect(), "complete");
    assert_eq!(all.len() - distinct.len(), 2, "only the padding repeats");
    // Shuffling is the same on every rank: the shards interleave one global order.
    let mut whole = DataLoader::new(numbers(10)).batch_size(2).shuffle(true).seed(4);
    let order = epoch(&mut whole, 1).concat();
    assert_eq!(shards[0][0], order[0]);
    assert_eq!(shards[1][0], order[1]);
}
