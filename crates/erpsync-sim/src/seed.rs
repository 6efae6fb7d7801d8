//! Deterministic test data: a catalogue, people and order lines generated from a seed, so both
//! simulators can be filled with the same SKUs and a failing test or bench replays exactly.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::server::cents;

/// One product as both sides know it: the SKU is the shop's `sku` and the ERP's `code`.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogueItem {
    pub sku: String,
    pub name: String,
    /// Price with VAT.
    pub price_gross: f64,
    pub vat_percentage: f64,
    pub stock: i64,
    pub weight: f64,
}

impl CatalogueItem {
    pub fn price_net(&self) -> f64 {
        cents(self.price_gross / (1.0 + self.vat_percentage / 100.0))
    }
}

/// A customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub phone: String,
}

const NOUNS: &[&str] = &[
    "Banda LED",
    "Bec",
    "Cablu",
    "Priza",
    "Intrerupator",
    "Lampa",
    "Prelungitor",
    "Senzor",
    "Baterie",
    "Incarcator",
    "Difuzor",
    "Ventilator",
    "Releu",
    "Siguranta",
    "Adaptor",
    "Corp",
];
const TRAITS: &[&str] = &[
    "RGB",
    "alb cald",
    "alb rece",
    "inteligent",
    "IP65",
    "exterior",
    "USB-C",
    "12V",
    "230V",
    "negru",
    "argintiu",
    "compact",
    "dimabil",
    "solar",
    "magnetic",
    "industrial",
];
const FIRST: &[&str] = &[
    "Ana", "Ion", "Maria", "Andrei", "Elena", "Mihai", "Ioana", "Radu", "Cristina", "Vlad",
];
const LAST: &[&str] = &[
    "Popescu", "Ionescu", "Popa", "Dumitru", "Stan", "Stoica", "Gheorghe", "Matei", "Ciobanu",
    "Rusu",
];

/// The SKU of the `i`-th catalogue item (from 1).
pub fn sku(i: usize) -> String {
    format!("SKU-{i:06}")
}

/// `n` products with SKUs `SKU-000001`…, names, prices (19 % VAT), stock and weight.
pub fn catalogue(n: usize, seed: u64) -> Vec<CatalogueItem> {
    let mut rng = StdRng::seed_from_u64(seed);
    (1..=n)
        .map(|i| CatalogueItem {
            sku: sku(i),
            name: format!(
                "{} {} {}",
                NOUNS[rng.random_range(0..NOUNS.len())],
                TRAITS[rng.random_range(0..TRAITS.len())],
                i
            ),
            price_gross: cents(rng.random_range(5.0..500.0)),
            vat_percentage: 19.0,
            stock: rng.random_range(0..200),
            weight: cents(rng.random_range(0.05..5.0)),
        })
        .collect()
}

/// `n` customers with unique e-mail addresses.
pub fn people(n: usize, seed: u64) -> Vec<Person> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_9e09_1e00);
    (1..=n)
        .map(|i| {
            let first = FIRST[rng.random_range(0..FIRST.len())];
            let last = LAST[rng.random_range(0..LAST.len())];
            Person {
                first_name: first.to_owned(),
                last_name: last.to_owned(),
                email: format!(
                    "{}.{}{}@example.com",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    i
                ),
                phone: format!("07{:08}", rng.random_range(0..100_000_000u64)),
            }
        })
        .collect()
}

/// A supplier company.
#[derive(Debug, Clone, PartialEq)]
pub struct Company {
    pub name: String,
    /// Fiscal code (CUI); VAT payers write it with the `RO` prefix.
    pub vat_code: String,
    pub email: String,
    pub phone: String,
    pub address: String,
}

const COMPANY_WORDS: &[&str] = &[
    "Electro", "Lumina", "Carpat", "Dunarea", "Nord", "Vest", "Agro", "Tehno", "Metal", "Delta",
];
const CITIES: &[&str] = &[
    "Bucuresti",
    "Cluj-Napoca",
    "Iasi",
    "Timisoara",
    "Brasov",
    "Constanta",
];

/// `n` suppliers with unique fiscal codes, about half of them VAT payers (`RO` prefix).
pub(crate) fn companies(n: usize, seed: u64) -> Vec<Company> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xc0_4a41);
    (1..=n)
        .map(|i| {
            let word = COMPANY_WORDS[rng.random_range(0..COMPANY_WORDS.len())];
            let city = CITIES[rng.random_range(0..CITIES.len())];
            // Unique: the index sits in the low digits.
            let digits = 10_000_000 + rng.random_range(0..9_000u64) * 10_000 + i as u64;
            let prefix = if rng.random_bool(0.5) { "RO" } else { "" };
            Company {
                name: format!("{word} Distributie {i} SRL"),
                vat_code: format!("{prefix}{digits}"),
                email: format!("comenzi@{}{i}.example.ro", word.to_lowercase()),
                phone: format!("02{:08}", rng.random_range(0..100_000_000u64)),
                address: format!("Str. Industriei {}, {city}", rng.random_range(1..200)),
            }
        })
        .collect()
}

/// The digits of a fiscal code: how both simulators tell two codes apart (`RO 123` and `123`
/// name the same company).
pub fn fiscal_digits(code: &str) -> String {
    code.chars().filter(char::is_ascii_digit).collect()
}

/// Lines of a generated order: indexes into a catalogue of `catalogue_len` items, quantities.
pub(crate) fn order_lines(rng: &mut StdRng, catalogue_len: usize) -> Vec<(usize, i64)> {
    let n = rng.random_range(1..=3usize).min(catalogue_len);
    let mut lines: Vec<(usize, i64)> = Vec::with_capacity(n);
    while lines.len() < n {
        let i = rng.random_range(0..catalogue_len);
        if lines.iter().all(|(j, _)| *j != i) {
            lines.push((i, rng.random_range(1..=4)));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_data() {
        assert_eq!(catalogue(50, 7), catalogue(50, 7));
        assert_ne!(catalogue(50, 7), catalogue(50, 8));
        let items = catalogue(3, 1);
        assert_eq!(items[2].sku, "SKU-000003");
        let people = people(100, 3);
        let mut emails: Vec<_> = people.iter().map(|p| &p.email).collect();
        emails.sort();
        emails.dedup();
        assert_eq!(emails.len(), 100);
        let companies = companies(500, 3);
        let mut codes: Vec<_> = companies
            .iter()
            .map(|c| fiscal_digits(&c.vat_code))
            .collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), 500);
        assert_eq!(fiscal_digits("RO 1234-56"), "123456");
    }
}
